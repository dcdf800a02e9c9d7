"""User errors: one clear line, exit code 2, no traceback.

Anything a user can cause (a missing file, a bad flag value, a model that cannot be
loaded offline) raises :class:`UserError`. :func:`run_main` turns it into a single
log line and exit code 2. Every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import Callable, Sequence

from ragtune.core.redaction import shown

logger = logging.getLogger("ragtune")

USER_ERROR_EXIT_CODE = 2
_AT_END_OF_MAIN: list[Callable[[], None]] = []
INTERRUPTED_EXIT_CODE = 130


class UserError(Exception):
    """An error in the user's input: data files, flags or models."""


def run_main(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run a script's ``main`` and exit with its code; user errors exit 2 without a traceback."""
    try:
        code = main(argv)
    except UserError as err:
        # Without configured handlers, logging's last-resort handler still prints it to stderr.
        logger.error("error: %s", shown(str(err)))  # a file flag's value can be a pasted token
        sys.exit(USER_ERROR_EXIT_CODE)
    except KeyboardInterrupt:
        # Ctrl-C outside training (loading, mining, evaluation): nothing half-written is kept as finished
        # (files are written atomically, metrics.json last), so one line and the shell's code for SIGINT.
        logger.warning("Interrupted (Ctrl-C): stopped; rerun the same command to start again or resume")
        sys.exit(INTERRUPTED_EXIT_CODE)
    finally:
        while _AT_END_OF_MAIN:
            _AT_END_OF_MAIN.pop()()
    sys.exit(code or 0)


def release_when_main_ends(release: Callable[[], None]) -> None:
    """Have :func:`run_main` call ``release`` when the script's main returns or raises (an output-dir lock): atexit
    alone would leave it held when a script runs in-process, in a notebook or a test."""
    _AT_END_OF_MAIN.append(release)

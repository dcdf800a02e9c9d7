"""What every script's command line shares: the help layout and the flag values a run records."""

from __future__ import annotations

import argparse
from typing import Any

from ragtune.core.redaction import redact_config


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown in ``--help``, and the module docstring's command examples kept as written."""


def new_parser(description: str | None) -> argparse.ArgumentParser:
    """A parser for a ragtune script (argparse's own errors already exit 2 with one line)."""
    return argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)


def args_to_config(args: argparse.Namespace) -> dict[str, Any]:
    """Flag values for metrics.json and model cards: secret flags redacted (ragtune.core.redaction), numbers kept."""
    return redact_config(vars(args))

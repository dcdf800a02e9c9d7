"""What every script's command line shares: the help layout and the flag values a run records."""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn, Sequence

from ragtune.core.fusion import DEFAULT_WEIGHT_RULE, WEIGHT_RULES
from ragtune.core.redaction import (
    known_secrets,
    redact_config,
    remember_secrets,
    scrub_command_line_message,
    unknown_arguments_message,
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown in ``--help``, and the module docstring's command examples kept as written."""


class ScrubbingParser(argparse.ArgumentParser):
    """argparse, whose own messages (unknown or mistyped flags, invalid values) never echo a secret.

    A mistyped ``--hub-token hf_…`` would otherwise be printed back as "unrecognized arguments: --hub-token hf_…".
    Errors are one line (no usage block), exit code 2; the secret flags' values, once parsed, are remembered so
    that no log line shows them (:func:`ragtune.core.redaction.remember_secrets`).
    """

    command_line: Sequence[str] = ()

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        self.command_line = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(unknown_arguments_message(extras, self.known_flags()))
        remember_secrets(known_secrets(vars(parsed)))
        return parsed

    def known_flags(self) -> list[str]:
        return [flag for action in self._actions for flag in action.option_strings]

    def error(self, message: str) -> NoReturn:
        text = scrub_command_line_message(message, self.command_line, self.known_flags())
        self.exit(2, f"{self.prog}: error: {text} (--help lists every flag)\n")


def new_parser(description: str | None) -> argparse.ArgumentParser:
    """A parser for a ragtune script: argparse's own errors exit 2 with one line that shows no secret."""
    return ScrubbingParser(description=description, formatter_class=HelpFormatter)


def args_to_config(args: argparse.Namespace) -> dict[str, Any]:
    """Flag values for metrics.json and model cards: secret flags redacted (ragtune.core.redaction), numbers kept."""
    return redact_config(vars(args))


def add_weight_rule_arg(group: argparse._ArgumentGroup, chosen_on: str) -> None:
    """``--weight_rule``: how fusion weights are picked on ``chosen_on`` (training's dev queries, evaluation's
    --train_data), the same rules everywhere (:func:`ragtune.core.fusion.pick_weight`)."""
    group.add_argument("--weight_rule", choices=WEIGHT_RULES, default=DEFAULT_WEIGHT_RULE,
                       help=f"How fusion weights (hybrid dense weight; reranker against its first stage) are picked "
                            f"on {chosen_on}: smoothed takes the best weight after averaging each with its "
                            f"neighbours (a plateau beats a lucky peak on ~20 queries); one_se the smallest move "
                            f"away from BM25 / the first stage within one standard error of the best (safest, often "
                            f"BM25 alone); max the best (over-fits).")

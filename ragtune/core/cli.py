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


class OneValuePerDest(argparse._StoreAction):
    """argparse's "store", refusing one setting given two different values under two of its names.

    A flag with aliases (``--epochs`` / ``--num_train_epochs``), or two flags writing one setting
    (``--warmup_steps`` / ``--warmup_ratio``), would otherwise silently keep whichever came last. The same name
    given twice keeps argparse's rule (the last wins), as does the same value under two names.
    """

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        given = getattr(parser, "given_values", None)
        if given is not None and option_string:
            earlier = given.get(self.dest)
            if earlier is not None and earlier[0] != option_string and earlier[1] != values:
                parser.error(f"{earlier[0]} and {option_string} set the same thing, with different values "
                             f"({earlier[1]} and {values}): give one of them")
            given[self.dest] = (option_string, values)
        super().__call__(parser, namespace, values, option_string)


class ScrubbingParser(argparse.ArgumentParser):
    """argparse, whose own messages (unknown or mistyped flags, invalid values) never echo a secret.

    A mistyped ``--hub-token hf_…`` would otherwise be printed back as "unrecognized arguments: --hub-token hf_…".
    Errors are one line (no usage block), exit code 2; the secret flags' values, once parsed, are remembered so
    that no log line shows them (:func:`ragtune.core.redaction.remember_secrets`). No abbreviations (argparse
    would take ``--epoch`` for ``--epochs``): an unknown flag is an error naming the closest known one. A setting
    given two different values under two names is refused (:class:`OneValuePerDest`).
    """

    command_line: Sequence[str] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.register("action", "store", OneValuePerDest)
        self.register("action", None, OneValuePerDest)
        self.given_values: dict[str, tuple[str, Any]] = {}

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        self.command_line = list(sys.argv[1:] if args is None else args)
        self.given_values = {}
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
    """A parser for a ragtune script: argparse's own errors exit 2 with one line that shows no secret; no
    abbreviated flags, "did you mean" for an unknown one."""
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

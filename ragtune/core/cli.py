"""What every script's command line shares: the help layout and the flag values a run records."""

from __future__ import annotations

import argparse
from typing import Any

from ragtune.core.fusion import DEFAULT_WEIGHT_RULE, WEIGHT_RULES
from ragtune.core.redaction import redact_config


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown in ``--help``, and the module docstring's command examples kept as written."""


def new_parser(description: str | None) -> argparse.ArgumentParser:
    """A parser for a ragtune script (argparse's own errors already exit 2 with one line)."""
    return argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)


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

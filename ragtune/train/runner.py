"""One fine-tuning run, in the order every script's ``main()`` goes through it.

The three fine-tuning scripts share everything here: checks of the output dir and of
``--resume_from_checkpoint`` that write nothing, the Trainer arguments common to all of them, work
done once on the main process and shared with the other ranks, Ctrl-C/SIGTERM checkpoints, the first
write to the output dir (only after data, flags and model were validated: a run that fails before
that leaves a previous finished run byte-identical), and the final save with ``metrics.json`` and
curves. Each script supplies only what differs: its data, model, examples, loss and evaluator.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from transformers import TrainerCallback

from ragtune.train.arguments import default_output_dir
from ragtune.core.cli import args_to_config
from ragtune.core.data import Corpus, LabelledQuery
from ragtune.core.io import setup_logging, write_json
from ragtune.train.outputs import plot_training_curves
from ragtune.train.training_args import Precision, resolve_precision, trainer_kwargs
from ragtune.train.callbacks import (InterruptCheckpointCallback, SamplerEpochCallback, SaveBestCheckpointCallback,
                                     early_stopping_callbacks, exit_after_interrupt)
from ragtune.train.checkpoints import (FINISHED_MARKER, check_output_dir, clear_finished_run, resolve_resume,
                                       warn_if_process_count_changed)
from ragtune.train.distributed import compute_on_main_and_share, is_main_process, local_rank_is_main

logger = logging.getLogger(__name__)
T = TypeVar("T")


class TrainingRun:
    """What every fine-tuning script does around its own model, data and loss.

    ``metric_prefix`` is how the script's Trainer names dev metrics (``eval_dev_`` for the
    sentence-transformers evaluators, ``eval_`` for the generator), so that
    ``metric_key`` matches the logged key exactly: a mismatch would make early stopping and
    best-checkpoint selection silently keep the last step. ``callbacks`` are extra
    ``TrainerCallback``s from the caller (tests and benchmarks observe training through them).
    """

    def __init__(self, args: argparse.Namespace, *, output_suffix: str, metric_prefix: str = "eval_dev_",
                 callbacks: Sequence[TrainerCallback] = ()) -> None:
        setup_logging(local_rank_is_main())
        self.started = time.time()
        self.args = args
        args.output_dir = args.output_dir or default_output_dir(args.base_model, output_suffix)
        self.output_dir = Path(args.output_dir)
        self.metric_prefix = metric_prefix
        self.metric_key = metric_prefix + args.metric_for_best_model
        self.extra_callbacks = list(callbacks)
        # Read-only checks: nothing in the output dir is touched until train().
        self.overwrites_finished_run = check_output_dir(self.output_dir, args.overwrite_output_dir)
        self.resume_from = resolve_resume(args.resume_from_checkpoint, self.output_dir, self.overwrites_finished_run)
        self.precision: Precision | None = None
        self.world_size = 1
        self.interrupt = InterruptCheckpointCallback()
        self.summary: dict[str, Any] = {}
        self.audit_summary: dict[str, Any] | None = None

    # ------------------------------------------------------------------ before training

    def audit(self, corpus: Corpus, train: list[LabelledQuery], dev: list[LabelledQuery]
              ) -> tuple[Corpus, list[LabelledQuery], list[LabelledQuery]]:
        """Personal information, train/dev leakage and duplicates, checked before anything is written.

        Returns the data to train on: redacted copies under ``--pii redact`` (the files are untouched),
        else the inputs. ``--pii error`` raises a UserError here. The summary goes into metrics.json
        and the model card, so that publishing can refuse a model trained on unredacted personal data.
        """
        from ragtune.audit import run_audit

        result = run_audit(corpus, train, dev, policy=self.args.pii,
                           sources={"corpus": str(self.args.corpus), "train": str(self.args.train_data),
                                    "test": f"{self.args.train_data} (dev split)"},
                           report_path=self.args.audit_report)
        self.audit_summary = result.summary()
        return result.corpus, result.train, result.test

    def training_arguments(self, cls: type[T], *, has_dev: bool, find_unused_parameters: bool = False,
                           **extra: Any) -> T:
        """The script's ``TrainingArguments`` class filled from the shared flags (plus ``extra``).

        Building it starts the distributed state under ``accelerate launch``; every rank then resumes
        from the checkpoint the main process found.
        """
        self.precision = resolve_precision(self.args.precision)
        kwargs = trainer_kwargs(self.args, self.precision, has_dev, self.metric_key, str(self.output_dir),
                                eval_on_start=self.resume_from is None,
                                find_unused_parameters=find_unused_parameters)
        kwargs.update(extra)
        training_args = cls(**kwargs)
        self.world_size = training_args.world_size
        self.resume_from = compute_on_main_and_share(lambda found=self.resume_from: found)
        warn_if_process_count_changed(self.resume_from, self.world_size)
        if has_dev:
            # The base model's dev metrics are already in a resumed run's history; a second evaluation
            # would count against early stopping's patience.
            training_args.eval_on_start = self.resume_from is None
        return training_args

    @staticmethod
    def share(fn: Callable[[], T]) -> T:
        """Compute ``fn`` on the main process only and give every rank its result (mining, indexes)."""
        return compute_on_main_and_share(fn)

    def trainer_callbacks(self, has_dev: bool) -> list[TrainerCallback]:
        """Interruption checkpoints, save-best, early stopping, sampler epochs, then the caller's callbacks."""
        return [self.interrupt, SaveBestCheckpointCallback(), *early_stopping_callbacks(self.args, has_dev),
                SamplerEpochCallback(), *self.extra_callbacks]

    def log_summary(self, title: str, fields: dict[str, Any]) -> None:
        """The start-up summary: one block a user reads before the first step (and metrics.json keeps)."""
        self.summary.update(fields)
        width = max(map(len, fields), default=0)
        lines = "\n".join(f"  {name.ljust(width)}  {value}" for name, value in fields.items())
        logger.info("%s\n%s", title, lines)

    # ------------------------------------------------------------------ training

    def train(self, trainer: Any) -> int | None:
        """Train (resuming ``resume_from``); the exit code when interrupted (checkpoint saved), else None.

        This is the run's first write to the output dir: a finished run there is cleared only now
        (--overwrite_output_dir), after the script has validated its data, flags and model.
        """
        if self.overwrites_finished_run and self.resume_from is None and is_main_process():
            clear_finished_run(self.output_dir)
        self.interrupt.install()
        try:
            trainer.train(resume_from_checkpoint=self.resume_from)
        finally:
            self.interrupt.uninstall()
        self.interrupt.synchronize(trainer.args.device)  # a signal after the last step: every rank or none stops
        if self.interrupt.received:
            return exit_after_interrupt(self.interrupt, str(self.output_dir))
        return None

    # ------------------------------------------------------------------ after training

    def finish(self, trainer: Any, *, save: Callable[[str], None], metrics: dict[str, Any], table: str = "",
               curve_metrics: tuple[str, ...] = ("ndcg@5", "mrr@5", "recall@5", "hit@5")) -> int:
        """Main process: the final model, curves and ``metrics.json`` (written last: it marks a finished run)."""
        if not is_main_process():
            return 0
        save(str(self.output_dir))
        if self.audit_summary is not None:
            append_audit_to_card(self.output_dir / "README.md", self.audit_summary)
        plot_training_curves(trainer.state.log_history, self.metric_prefix, self.output_dir / "training_curves.png",
                             curve_metrics)
        state = trainer.state
        write_json(self.output_dir / FINISHED_MARKER, {
            "base_model": self.args.base_model,
            **metrics,
            "best_checkpoint": state.best_model_checkpoint,
            "best_metric": {self.args.metric_for_best_model: state.best_metric},
            "global_step": state.global_step,
            "precision": self.precision.name if self.precision else None,
            "processes": self.world_size,
            "wall_time_s": round(time.time() - self.started, 1),
            "data_audit": self.audit_summary,
            "config": args_to_config(self.args),
        })
        if table:
            print(f"\n{table}\n")
        return 0


def append_audit_to_card(card: Path, summary: dict[str, Any]) -> None:
    """A "Data audit" section in the model card: what the training data held (counts only, never values)."""
    if not card.is_file():
        return
    from ragtune.audit.report import pii_summary_line

    leakage = summary["leakage"]
    pii_line = pii_summary_line(summary["pii"], "redacted before training", "**not redacted**")
    card.write_text(card.read_text(encoding="utf-8").rstrip() + "\n\n## Data audit\n\n"
                    f"- Personal information in the training data: {pii_line}\n"
                    f"- Dev queries with a near-copy among the training queries: {leakage['leaked_test_queries']} of "
                    f"{leakage['test_queries']}\n"
                    f"- Duplicate passage groups in the corpus: {summary['duplicate_passages']['groups']}\n",
                    encoding="utf-8")

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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from transformers import TrainerCallback

from ragtune.audit import AuditResult, run_audit, write_audit_report
from ragtune.core.cli import args_to_config
from ragtune.core.data import Corpus, LabelledQuery, load_corpus, load_queries, split_queries
from ragtune.core.expansions import QueryExpander, load_expansions, load_saved
from ragtune.core.io import write_json
from ragtune.core.output_lock import OutputDirLock
from ragtune.core.output_paths import check_args_paths
from ragtune.core.redaction import shown_in
from ragtune.train.arguments import default_output_dir
from ragtune.train.callbacks import (
    DevSummaryCallback,
    InterruptCheckpointCallback,
    ModelSettingsCallback,
    SamplerEpochCallback,
    StopNow,
    TrainingInterrupted,
    best_model_callbacks,
    exit_after_interrupt,
    exit_on_second_interrupt,
    save_interrupted_step,
    use_console_progress,
)
from ragtune.train.cards import write_training_card
from ragtune.train.checkpoints import (
    FINISHED_MARKER,
    check_model_settings,
    check_output_dir,
    clear_finished_run,
    log_resume_decision,
    model_settings,
    remove_finished_run_checkpoints,
    resolve_resume,
    warn_if_process_count_changed,
)
from ragtune.train.distributed import compute_on_main_and_share, is_main_process, local_rank_is_main
from ragtune.train.outputs import (
    dev_metrics_from_history,
    dev_query_rows,
    plot_training_curves,
    show_card_data_masked,
    write_dev_queries,
)
from ragtune.train.training_args import Precision, resolve_precision, trainer_kwargs

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class LabelledData:
    """The corpus and labelled queries a run trains on, split at the query level and audited."""

    corpus: Corpus
    queries: list[LabelledQuery]
    train: list[LabelledQuery]
    dev: list[LabelledQuery]


@dataclass(frozen=True)
class TrainingPlan:
    """What the run decided once the distributed state exists (``TrainingRun.plan``)."""

    arguments: Any  # the script's TrainingArguments
    precision: Precision
    world_size: int
    resume_from: str | None  # the checkpoint every rank resumes from; None starts fresh

    @property
    def device(self) -> Any:
        return self.arguments.device


class TrainingRun:
    """What every fine-tuning script does around its own model, data and loss.

    ``model_kind`` names the model in messages ("embedding model", "reranker", "adapter").
    ``metric_prefix`` is how the script's Trainer names dev metrics (``eval_dev_`` for the
    sentence-transformers evaluators, ``eval_`` for the generator), so that ``metric_key``
    matches the logged key exactly: a mismatch would make early stopping and best-checkpoint
    selection silently keep the last step. ``callbacks`` are extra ``TrainerCallback``s from the
    caller (tests and benchmarks observe training through them).
    """

    def __init__(self, args: argparse.Namespace, *, model_kind: str, output_suffix: str,
                 metric_prefix: str = "eval_dev_", callbacks: Sequence[TrainerCallback] = ()) -> None:
        self.started = time.time()
        self.args = args
        self.model_kind = model_kind
        args.output_dir = args.output_dir or default_output_dir(args.base_model, output_suffix)
        self.output_dir = Path(args.output_dir)
        self.metric_prefix = metric_prefix
        self.metric_key = metric_prefix + args.metric_for_best_model
        self.extra_callbacks = list(callbacks)
        # Nothing the run reads may be overwritten; one run per output dir (the lock is the only file written
        # before train(), and it goes with the process).
        check_args_paths(args, outputs=("output_dir", "audit_report"))
        self.expander = load_expansions(args.expansions) if getattr(args, "expansions", None) else None
        self.lock = OutputDirLock(self.output_dir)
        if local_rank_is_main():
            self.lock.acquire()
        # Read-only checks: nothing in the output dir is touched until train().
        self.overwrites_finished_run = check_output_dir(self.output_dir, args.overwrite_output_dir)
        self.found_checkpoint = resolve_resume(args.resume_from_checkpoint, self.output_dir,
                                               self.overwrites_finished_run)
        if self.found_checkpoint is not None:  # other --lora_r, --max_seq_length, base model...: one line, now
            check_model_settings(self.found_checkpoint, model_settings(args))
        self.interrupt = InterruptCheckpointCallback()
        self.audit_summary: dict[str, Any] | None = None
        self.audit_result: AuditResult | None = None
        self.dev_rows: list[dict[str, Any]] | None = None  # dev_queries.csv, written with the first write

    # ------------------------------------------------------------------ before training

    def load_labelled_data(self, expanded: bool = False) -> LabelledData:
        """``--corpus`` and ``--train_data`` read and checked, split by ``--dev_ratio``, audited.

        ``expanded``: the train and dev queries as a first stage sees them (``--expansions``): the embedding model
        is a first stage, so it trains and is evaluated on them, as the pipeline will query it.
        """
        corpus = load_corpus(self.args.corpus)
        queries = load_queries(self.args.train_data, corpus)
        train, dev = split_queries(queries, self.args.dev_ratio, self.args.seed)
        corpus, train, dev = self.audit(corpus, train, dev)
        self.dev_rows = dev_query_rows(dev)
        if expanded and self.expander is not None:
            train, dev = ([replace(q, query=self.expander(q.query)) for q in part] for part in (train, dev))
        return LabelledData(corpus, queries, train, dev)

    def first_stage_expander(self, embedding_model: str | None) -> QueryExpander | None:
        """The map a first stage built on ``embedding_model`` applies: --expansions, else the one that model was
        trained with (its query_expansions.csv), as evaluation and prediction choose it."""
        if self.expander is not None or not embedding_model:
            return self.expander
        return load_saved(embedding_model)

    def audit(self, corpus: Corpus, train: list[LabelledQuery], dev: list[LabelledQuery]
              ) -> tuple[Corpus, list[LabelledQuery], list[LabelledQuery]]:
        """Personal information, train/dev leakage and duplicates, checked before anything is written.

        Returns the data to train on: redacted copies under ``--pii redact`` (the files are untouched),
        else the inputs. ``--pii error`` raises a UserError here. The summary goes into metrics.json
        and the model card, so that publishing can refuse a model trained on unredacted personal data.
        """
        result = run_audit(corpus, train, dev, policy=self.args.pii,
                           sources={"corpus": str(self.args.corpus), "train": str(self.args.train_data),
                                    "test": f"{self.args.train_data} (dev split)"})
        self.audit_summary = result.summary()
        self.audit_result = result
        return result.corpus, result.train, result.test

    def plan(self, cls: type, *, has_dev: bool, find_unused_parameters: bool = False, **extra: Any) -> TrainingPlan:
        """The script's ``TrainingArguments`` class filled from the shared flags (plus ``extra``), and what follows.

        Building it starts the distributed state under ``accelerate launch``; every rank then resumes
        from the checkpoint the main process found. When resuming, the start-of-training dev evaluation is
        skipped: the base model's dev metrics are already in the restored history, and a second evaluation
        would count against early stopping's patience.
        """
        precision = resolve_precision(self.args.precision)
        kwargs = trainer_kwargs(self.args, precision, has_dev, self.metric_key, str(self.output_dir),
                                eval_on_start=self.found_checkpoint is None,
                                find_unused_parameters=find_unused_parameters)
        arguments = cls(**{**kwargs, **extra})
        resume_from = compute_on_main_and_share(lambda found=self.found_checkpoint: found)
        if resume_from is not None:  # here, not in __init__: after the flags are validated (a fresh start: summary)
            log_resume_decision(resume_from)
        warn_if_process_count_changed(resume_from, arguments.world_size)
        if has_dev:
            arguments.eval_on_start = resume_from is None
        return TrainingPlan(arguments, precision, arguments.world_size, resume_from)

    @staticmethod
    def share(fn: Callable[[], T]) -> T:
        """Compute ``fn`` on the main process only and give every rank its result (mining, indexes)."""
        return compute_on_main_and_share(fn)

    def trainer_callbacks(self, has_dev: bool) -> list[TrainerCallback]:
        """Interruption checkpoints, early stopping and save-best, the model settings recorded in each checkpoint,
        sampler epochs, the console's line per dev evaluation, then the caller's callbacks."""
        return [self.interrupt, *best_model_callbacks(self.args, has_dev),
                ModelSettingsCallback(model_settings(self.args)), SamplerEpochCallback(),
                *([DevSummaryCallback(self.metric_prefix, self.args.metric_for_best_model)] if has_dev else []),
                *self.extra_callbacks]

    def log_summary(self, title: str, plan: TrainingPlan, *, model: str, steps: int, fields: dict[str, Any],
                    batch_note: str = "") -> None:
        """The start-up summary a user reads before the first step, and a warning if warm-up covers every step.

        ``model`` is the first line's description (the device is added); ``fields`` are the script's own
        lines (data, split, negatives...); precision, batch, steps and output are the same for every script.
        """
        args = self.args
        lines = {
            "model": f"{model} on {plan.device}",
            **fields,
            "precision": plan.precision.name,
            "batch": f"effective {args.batch_size * args.gradient_accumulation_steps * plan.world_size} (= "
                     f"{args.batch_size} x {args.gradient_accumulation_steps} accumulation x {plan.world_size} "
                     f"process(es)){batch_note}",
            "steps": f"{steps} optimizer steps, lr {args.lr:g}, warm-up {args.warmup_steps:g}",
            "output": args.output_dir if plan.resume_from else f"{args.output_dir} (no checkpoint to resume from: "
                                                               f"starting fresh)",
        }
        width = max(map(len, lines))
        logger.info("%s\n%s", title, "\n".join(f"  {name.ljust(width)}  {value}" for name, value in lines.items()))
        if 1 <= args.warmup_steps and args.warmup_steps >= steps:
            logger.warning("--warmup_steps %d covers all %d optimizer steps: the learning rate never reaches --lr %g",
                           args.warmup_steps, steps, args.lr)

    # ------------------------------------------------------------------ training

    def train(self, trainer: Any, plan: TrainingPlan) -> int | None:
        """Train (resuming where the plan says); the exit code when interrupted (checkpoint saved), else None.

        This is the run's first write to the output dir: a finished run there is cleared only now
        (--overwrite_output_dir), after the script has validated its data, flags and model. A signal during
        an evaluation stops it and saves the step it followed (none before the first step); a second Ctrl-C
        stops at once without saving (exit 130). Either way one line says where a rerun continues.
        """
        if self.overwrites_finished_run and plan.resume_from is None and is_main_process():
            clear_finished_run(self.output_dir)
        if self.audit_result is not None and is_main_process():
            write_audit_report(self.audit_result, self.args.audit_report)
        if self.dev_rows is not None and is_main_process():
            write_dev_queries(self.output_dir, self.dev_rows)
        show_card_data_masked(trainer.model)  # checkpoints' cards: no personal value unmasked (--pii warn)
        use_console_progress(trainer, getattr(self.args, "verbose", False))  # no raw log dictionaries on screen
        self.interrupt.install()
        try:
            try:
                trainer.train(resume_from_checkpoint=plan.resume_from)
            except TrainingInterrupted:
                save_interrupted_step(trainer)
            self.interrupt.synchronize(trainer.args.device)  # a signal after the last step: every rank or none stops
            if self.interrupt.received:
                self.lock.release()
                return exit_after_interrupt(self.interrupt, str(self.output_dir), trainer.state.global_step)
        except StopNow:
            self.lock.release()
            return exit_on_second_interrupt(str(self.output_dir))
        finally:
            self.interrupt.uninstall()
        return None

    # ------------------------------------------------------------------ after training

    def base_dev_metrics(self, trainer: Any) -> dict[str, float]:
        """The base model's dev metrics: the first evaluation in the Trainer's history (before any step)."""
        history = dev_metrics_from_history(trainer.state.log_history, self.metric_prefix)
        return history[0][1] if history else {}

    def finish(self, trainer: Any, plan: TrainingPlan, *, save: Callable[[str], None], metrics: dict[str, Any],
               table: str = "", curve_metrics: tuple[str, ...] = ("ndcg@5", "mrr@5", "recall@5", "hit@5")) -> int:
        """Main process: the final model, curves and ``metrics.json`` (written last: it marks a finished run).

        ``metrics["dev_metrics"]`` holds the base model's ("before") and the fine-tuned model's ("after")
        dev metrics; a fine-tuned model that is not above its base on the main metric gets a warning.
        """
        if not is_main_process():
            return 0
        save(str(self.output_dir))
        if self.expander is not None:  # every later step (evaluation, prediction) applies the same map
            self.expander.save(self.output_dir)
        write_training_card(self.output_dir, trainer, vars(self.args), metrics, self.audit_summary)  # honest card
        plot_training_curves(trainer.state.log_history, self.metric_prefix, self.output_dir / "training_curves.png",
                             curve_metrics, best_step=trainer.state.best_global_step,
                             reference=(metrics.get("dev_metrics") or {}).get("bm25"))  # where the script has it
        state = trainer.state
        write_json(self.output_dir / FINISHED_MARKER, shown_in({  # dev answers: personal values masked
            "base_model": self.args.base_model,
            **metrics,
            "best_checkpoint": state.best_model_checkpoint,
            "best_metric": {self.args.metric_for_best_model: state.best_metric},
            "global_step": state.global_step,
            "precision": plan.precision.name,
            "processes": plan.world_size,
            "wall_time_s": round(time.time() - self.started, 1),
            "data_audit": self.audit_summary,
            "query_expansions": self.expander.summary() if self.expander is not None else None,
            "config": args_to_config(self.args),
        }))
        if not getattr(self.args, "keep_checkpoints", True):  # a finished run is never resumed
            remove_finished_run_checkpoints(state, self.output_dir)
        if table:
            print(f"\n{table}\n")
        dev = metrics.get("dev_metrics") or {}
        warn_if_not_above_base(dev.get("before") or {}, dev.get("after") or {}, self.args.metric_for_best_model,
                               self.model_kind)
        self.lock.release()
        return 0


def warn_if_not_above_base(before: dict[str, float], after: dict[str, float], metric: str, model_kind: str) -> None:
    """The one "fine-tuned is not better" rule of the three scripts: a tie counts as not better.

    A tie is the case to catch: a run whose best checkpoint is its first step saves the base model again.
    """
    if metric in after and metric in before and after[metric] <= before[metric]:
        logger.warning("The fine-tuned %s is not above the base model on dev %s (%.4f vs %.4f): try another --lr, "
                       "more epochs or more data", model_kind, metric, after[metric], before[metric])


def warn_if_below_bm25(bm25: dict[str, float], systems: dict[str, dict[str, float]], metric: str) -> None:
    """A warning for each system (fine-tuned model, hybrid, reranker...) below BM25 on dev ``metric``.

    On small domain corpora BM25 is the baseline to beat: a system below it should not be deployed as is.
    """
    if metric not in bm25:
        return
    for name, values in systems.items():
        if metric in values and values[metric] < bm25[metric]:
            logger.warning("The %s scores below BM25 on dev %s (%.4f < %.4f): BM25 alone is the safer first stage",
                           name, metric, values[metric], bm25[metric])

"""Trainer callbacks every fine-tuning run uses: interruption checkpoints, save-best, early stopping, sampler epochs,
the model-shaping settings recorded in each checkpoint, and the console (one line per dev evaluation)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import EarlyStoppingCallback, ProgressCallback, TrainerCallback

from ragtune.train.checkpoints import (
    CHECKPOINT_PREFIX,
    SAVED_ONLY_MODEL,
    checkpoint_problem,
    checkpoint_step,
    find_resumable_checkpoint,
    is_complete_checkpoint,
    write_model_settings,
)
from ragtune.train.distributed import is_distributed

logger = logging.getLogger(__name__)


SECOND_INTERRUPT_EXIT_CODE = 128 + signal.SIGINT


class TrainingInterrupted(Exception):
    """Raised inside ``Trainer.train`` to stop at once on a signal: during a long dev evaluation (the generator's
    generated answers) or before the first optimizer step. ``TrainingRun.train`` saves the step when one was trained."""


class StopNow(KeyboardInterrupt):
    """A second Ctrl-C: stop at once, without saving (a KeyboardInterrupt, so no ``except Exception`` swallows it)."""


class InterruptCheckpointCallback(TrainerCallback):
    """On SIGINT/SIGTERM (a Colab/Kaggle disconnect), save a checkpoint at the current step and stop.

    The signal only sets a flag; the Trainer saves at the end of the current optimizer step, so the
    checkpoint is consistent. Long dev evaluations poll :meth:`stop_requested` and stop generating (see
    ragtune/train/generator/evaluator.py). A second Ctrl-C raises :class:`StopNow`: the run stops at
    once without saving and says which checkpoint a rerun resumes from (exit 130).
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> "InterruptCheckpointCallback":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def stop_requested(self) -> bool:
        """True once a signal arrived: what long loops inside a training step poll (no global state)."""
        return self.received is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise StopNow
        self.received = signum
        logger.warning("Received %s: saving a checkpoint at the end of this step, then stopping",
                       signal.Signals(signum).name)

    def on_step_end(self, args, state, control, **kwargs):
        self.synchronize(args.device)
        if self.received is not None:
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_evaluate(self, args, state, control, **kwargs):
        # A signal during a dev evaluation stops right after it: the Trainer saves next, in the same call. Before
        # the first step (the start-of-training evaluation) there is nothing to save and the Trainer would train
        # one more step first: stop now.
        self.on_step_end(args, state, control, **kwargs)
        if self.received is not None and state.global_step == 0:
            raise TrainingInterrupted("interrupted before the first optimizer step")
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.synchronize(args.device)  # a signal after the last step: every rank or none reports it
        return control

    def synchronize(self, device: Any = "cpu") -> None:
        """Under DDP, stop on every rank when any rank got the signal (one scalar all-reduce per step).

        ``accelerate launch`` forwards SIGTERM/SIGINT to each process separately, so the ranks can see
        it at different steps; a rank that stopped alone would leave the others waiting forever.
        """
        if not is_distributed():
            return
        flag = torch.tensor([self.received or 0], dtype=torch.int64, device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item() and self.received is None:
            self.received = int(flag.item())

    @property
    def exit_code(self) -> int:
        return 128 + int(self.received or 0)


class SamplerEpochCallback(TrainerCallback):
    """Tell the training batch sampler the epoch at the start of every epoch, resumed ones included.

    A custom batch sampler shuffles by ``set_epoch``. When a run resumes mid-epoch the Trainer skips
    the batches already trained by wrapping the sampler, and under ``accelerate launch`` the chain is
    SkipBatchSampler -> BatchSamplerShard -> the sampler: neither transformers 5 nor accelerate 1.15
    reaches that deep, so without this the resumed epoch replays epoch 0's order. This walks the
    prepared dataloader's chain (DataLoaderShard -> BatchSamplerShard -> sampler) instead.
    """

    def on_epoch_begin(self, args, state, control, train_dataloader=None, **kwargs):
        epoch = int(state.epoch + 1e-6) if state.epoch else 0  # an integer at an epoch boundary
        sampler = getattr(train_dataloader, "batch_sampler", None)
        for _ in range(4):
            if sampler is None:
                break
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            sampler = getattr(sampler, "batch_sampler", None)
        return control


def early_stopping_callbacks(args: argparse.Namespace, has_dev: bool) -> list[TrainerCallback]:
    if has_dev and args.early_stopping_patience > 0:
        return [EarlyStoppingCallback(early_stopping_patience=args.early_stopping_patience)]
    return []


def best_model_callbacks(args: argparse.Namespace, has_dev: bool) -> list[TrainerCallback]:
    """Early stopping, then save-best: in this order, so that a tie is no improvement for early stopping's
    patience while save-best hands it to the later checkpoint (see :class:`SaveBestCheckpointCallback`)."""
    return [*early_stopping_callbacks(args, has_dev), SaveBestCheckpointCallback()]


def is_at_least_as_good(value: float, best: float, greater_is_better: bool) -> bool:
    return value >= best if greater_is_better else value <= best


class SaveBestCheckpointCallback(TrainerCallback):
    """Save a checkpoint at every dev evaluation that matches or improves the best metric (after step 0), and
    make ties go to the later checkpoint, here and in the Trainer's own best-model tracking.

    ``load_best_model_at_end`` can only go back to a checkpoint that exists: with
    ``--checkpoint_save_steps`` a multiple of ``--evaluation_steps``, a best evaluation that falls
    between two saves would otherwise be lost and a worse checkpoint become the final model.

    Ties: the Trainer keeps the first of equal scores (``Trainer._determine_best_metric`` compares with a
    strict ``>``, transformers 5), and on a small dev set the first evaluation is often a tie, trained at the
    first warm-up step's learning rate of 0: the "fine-tuned" model was then the base. A later checkpoint with
    the same dev score has trained more, so it wins the tie. The Trainer calls ``on_evaluate`` just before
    it compares; moving ``state.best_metric`` one float step down there makes its strict comparison choose
    the tie, and it then sets ``best_metric`` back to the same value. No private method is overridden, so the
    three scripts' trainers need no mixin. Early stopping reads ``best_metric`` before this (see
    :func:`best_model_callbacks`), so a tie still counts against its patience.
    """

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        key = args.metric_for_best_model
        if not key or not metrics or state.global_step == 0:
            return control
        value = metrics.get(key if key.startswith("eval_") else f"eval_{key}")
        if value is None:
            return control
        best = state.best_metric
        if best is None or is_at_least_as_good(value, best, args.greater_is_better):
            control.should_save = True
        if best is not None and value == best:
            state.best_metric = float(np.nextafter(best, -np.inf if args.greater_is_better else np.inf))
        return control


class ModelSettingsCallback(TrainerCallback):
    """Record the model-shaping flags (ragtune.train.checkpoints.MODEL_SHAPING_FLAGS) in every checkpoint, so
    that resuming it with other ones is refused in one line instead of a size-mismatch traceback."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = dict(settings)

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            write_model_settings(folder, self.settings)
        return control


def save_interrupted_step(trainer: Any) -> None:
    """Checkpoint the current step after a :class:`TrainingInterrupted` cut the Trainer's loop short.

    The interrupt came during the dev evaluation that the Trainer runs after an optimizer step and before
    that step's save: the step is saved as the Trainer would have (``_save_checkpoint``, the routine its own
    loop calls; there is no public one for a full checkpoint), and the ``on_save`` callbacks run. Nothing
    is saved before the first step, or when this step's checkpoint exists. The evaluation that was cut
    short is not in the saved history: a resumed run evaluates next at the next --evaluation_steps.
    """
    step = trainer.state.global_step
    if step == 0 or is_complete_checkpoint(Path(trainer.args.output_dir) / f"{CHECKPOINT_PREFIX}{step}"):
        return
    trainer._save_checkpoint(trainer.model_wrapped, trial=None)
    trainer.control = trainer.callback_handler.on_save(trainer.args, trainer.state, trainer.control)


def exit_after_interrupt(callback: InterruptCheckpointCallback, output_dir: str, step: int) -> int:
    """Say what the interrupt left (a checkpoint of this step, an older one, or nothing) and return the exit code."""
    checkpoint = find_resumable_checkpoint(output_dir, quiet=True)
    if checkpoint is None and step == 0:
        logger.warning("Interrupted before the first optimizer step: there is nothing to save. Rerunning the same "
                       "command starts fresh.")
    elif checkpoint is None:
        weights_only = checkpoint_problem(Path(output_dir) / f"{CHECKPOINT_PREFIX}{step}") == SAVED_ONLY_MODEL
        why = " (--save_only_model checkpoints hold no optimizer state)" if weights_only else ""
        logger.warning("Interrupted at step %d with no resumable checkpoint saved%s: rerunning the same command starts "
                       "fresh.", step, why)
    elif checkpoint_step(checkpoint) == step:
        logger.warning("Interrupted: checkpoint saved to %s. Run the same command with --resume_from_checkpoint auto "
                       "to continue.", checkpoint)
    else:
        logger.warning("Interrupted at step %d, which has no checkpoint: run the same command with "
                       "--resume_from_checkpoint auto to continue from %s.", step, checkpoint)
    sys.stdout.flush()
    return callback.exit_code


def exit_on_second_interrupt(output_dir: str) -> int:
    """A second Ctrl-C: nothing saved; one line on where a rerun starts. Exit code 130."""
    checkpoint = find_resumable_checkpoint(output_dir, quiet=True)
    where = f"resumes from {checkpoint}" if checkpoint else "starts fresh (no complete checkpoint yet)"
    logger.warning("Second Ctrl-C: stopped at once without saving. Rerunning the same command %s.", where)
    sys.stdout.flush()
    return SECOND_INTERRUPT_EXIT_CODE


# Evaluation bookkeeping the Trainer logs beside the dev metrics: kept in TensorBoard, left out of the console line.
EVAL_BOOKKEEPING = ("runtime", "samples_per_second", "steps_per_second", "epoch")


class DevSummaryCallback(TrainerCallback):
    """One console line per dev evaluation, instead of the Trainer's raw dictionaries (which TensorBoard and
    trainer_state.json keep): "dev @ step 20: ndcg@5 0.6123 (best 0.6123 at step 20), hit@5 ..., train loss 0.41".

    ``metric_prefix`` is how the Trainer names the dev metrics (``eval_dev_``, ``eval_``), ``metric`` the one that
    picks the best checkpoint; the other metrics shown are those at the same cutoff (``@5``), or all of them.
    """

    def __init__(self, metric_prefix: str, metric: str) -> None:
        self.metric_prefix = metric_prefix
        self.metric = metric

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.is_world_process_zero and metrics:
            line = self.summary(state, metrics, getattr(args, "greater_is_better", True) is not False)
            if line:
                logger.info("%s", line)
        return control

    def summary(self, state: Any, metrics: dict[str, float], greater_is_better: bool = True) -> str | None:
        key = self.metric_prefix + self.metric
        if key not in metrics:
            return None
        step = state.global_step
        best_value, best_step = best_in_history(state.log_history, key, greater_is_better)
        best = f" (best {best_value:.4f} at step {best_step})" if best_value is not None else ""
        others = ", ".join(f"{'dev loss' if name == 'loss' else name} {metrics[self.metric_prefix + name]:.4f}"
                           for name in self.other_metrics(metrics))
        loss = last_training_loss(state.log_history, step)
        runtime = metrics.get(f"{self.metric_prefix.split('_')[0]}_runtime")
        return (f"dev @ step {step}{' (base model)' if step == 0 else ''}: {self.metric} {metrics[key]:.4f}{best}"
                + (f", {others}" if others else "") + (f"; train loss {loss:.4g}" if loss is not None else "")
                + (f" [{runtime:.1f}s]" if runtime is not None else ""))

    def other_metrics(self, metrics: dict[str, float]) -> list[str]:
        cutoff = "@" + self.metric.split("@")[1] if "@" in self.metric else None
        names = [k[len(self.metric_prefix):] for k in metrics if k.startswith(self.metric_prefix)]
        return [name for name in names if name != self.metric and name not in EVAL_BOOKKEEPING
                and (cutoff is None or name.endswith(cutoff))]


def best_in_history(log_history: list[dict[str, Any]], key: str, greater_is_better: bool = True
                    ) -> tuple[float | None, int | None]:
    """The best value of ``key`` in the Trainer's log history and its step, among trained steps (the base model's
    evaluation at step 0 is no checkpoint to go back to); a tie goes to the later step, as the best checkpoint does
    (:class:`SaveBestCheckpointCallback`)."""
    best_value, best_step = None, None
    for entry in log_history:
        value = entry.get(key)
        if not entry.get("step"):
            continue
        if value is not None and (best_value is None or is_at_least_as_good(value, best_value, greater_is_better)):
            best_value, best_step = value, int(entry.get("step", 0))
    return best_value, best_step


def last_training_loss(log_history: list[dict[str, Any]], step: int) -> float | None:
    """The training loss most recently logged at or before ``step``."""
    losses = [entry["loss"] for entry in log_history if "loss" in entry and entry.get("step", 0) <= step]
    return losses[-1] if losses else None


class ConsoleProgressCallback(ProgressCallback):
    """The Trainer's progress bar without its raw log dictionaries: the bar shows the training loss and learning
    rate, :class:`DevSummaryCallback` a line per dev evaluation. ``verbose`` brings the dictionaries back.

    No evaluation bar either (the dev line says how long an evaluation took); with ``verbose`` there is one when
    stderr is a terminal: drawn inside the training bar it moves the cursor with control codes, which a log file
    would keep.
    """

    def __init__(self, verbose: bool = False) -> None:
        super().__init__()
        self.verbose = verbose

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if self.verbose and sys.stderr.isatty():
            super().on_prediction_step(args, state, control, eval_dataloader=eval_dataloader, **kwargs)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.verbose:
            super().on_log(args, state, control, logs=logs, **kwargs)
        elif state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
            postfix = {"loss": f"{logs['loss']:.4g}"}
            if "learning_rate" in logs:
                postfix["lr"] = f"{logs['learning_rate']:.2g}"
            self.training_bar.set_postfix(postfix, refresh=False)


def use_console_progress(trainer: Any, verbose: bool) -> None:
    """Swap the Trainer's terminal progress callback for :class:`ConsoleProgressCallback`. A notebook's progress
    widget (not a ProgressCallback) is left alone."""
    callbacks = trainer.callback_handler.callbacks
    if any(type(callback) is ProgressCallback for callback in callbacks):
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(ConsoleProgressCallback(verbose))

"""Trainer callbacks every fine-tuning run uses: interruption checkpoints, save-best, early stopping, sampler epochs."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any

import torch
from transformers import EarlyStoppingCallback, TrainerCallback

from ragtune.train.checkpoints import find_resumable_checkpoint
from ragtune.train.distributed import is_distributed

logger = logging.getLogger(__name__)


class InterruptCheckpointCallback(TrainerCallback):
    """On SIGINT/SIGTERM (a Colab/Kaggle disconnect), save a checkpoint at the current step and stop.

    The signal only sets a flag; the Trainer saves at the end of the current optimizer step, so the
    checkpoint is consistent. A second Ctrl-C interrupts immediately.
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

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
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
        # A signal during a long dev evaluation (the generator's generated answers take minutes) stops
        # right after it, instead of after one more training step.
        return self.on_step_end(args, state, control, **kwargs)

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


class SaveBestCheckpointCallback(TrainerCallback):
    """Also save a checkpoint at every dev evaluation that improves the best metric (after step 0).

    ``load_best_model_at_end`` can only go back to a checkpoint that exists: with
    ``--checkpoint_save_steps`` a multiple of ``--evaluation_steps``, a best evaluation that falls
    between two saves would otherwise be lost and a worse checkpoint become the final model.
    """

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        key = args.metric_for_best_model
        if not key or not metrics or state.global_step == 0:
            return control
        value = metrics.get(key if key.startswith("eval_") else f"eval_{key}")
        if value is None:
            return control
        best = state.best_metric
        if best is None or (value > best if args.greater_is_better else value < best):
            control.should_save = True
        return control


def exit_after_interrupt(callback: InterruptCheckpointCallback, output_dir: str) -> int:
    checkpoint = find_resumable_checkpoint(output_dir)
    logger.warning("Interrupted: checkpoint saved to %s. Run the same command with --resume_from_checkpoint auto "
                   "to continue.", checkpoint)
    sys.stdout.flush()
    return callback.exit_code


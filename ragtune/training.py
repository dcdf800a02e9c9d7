"""Training plumbing shared by the fine-tuning scripts.

Output-dir protection, resuming, Ctrl-C/SIGTERM checkpoints, precision, Trainer arguments,
work shared across distributed ranks, and the metrics.json / curves outputs.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
from transformers import EarlyStoppingCallback, TrainerCallback

from .errors import UserError

logger = logging.getLogger(__name__)

FINISHED_MARKER = "metrics.json"
CHECKPOINT_PREFIX = "checkpoint-"
T = TypeVar("T")


def setup_logging(is_main_process: bool = True) -> None:
    """INFO on the main process, warnings only on the others (one readable log under accelerate)."""
    level = logging.INFO if is_main_process else logging.WARNING
    # No force=True: keep handlers already installed (a notebook's, pytest's log capture).
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=level)
    logging.getLogger().setLevel(level)
    for noisy in ("httpx", "httpx2", "httpcore", "urllib3", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import transformers

    transformers.utils.logging.set_verbosity_warning()


def local_rank_is_main() -> bool:
    """True on the main process, before torch.distributed is initialised (reads launcher env vars)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


# ---------------------------------------------------------------------------- output dir and resume


def check_output_dir(output_dir: str | Path, overwrite: bool) -> bool:
    """Refuse a finished model's dir unless --overwrite_output_dir; read-only. True if it holds a finished run."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"--output_dir {output_dir} exists and is not a directory")
    finished = (output_dir / FINISHED_MARKER).exists()
    if finished and not overwrite:
        raise UserError(f"--output_dir {output_dir} already holds a finished model; pass --overwrite_output_dir to "
                        f"train again there, or choose another --output_dir")
    return finished


def clear_finished_run(output_dir: str | Path) -> None:
    """Remove a finished run's checkpoints and marker before training over it (--overwrite_output_dir).

    Called only once the new run's data, flags and model have all been validated: a run that fails
    before that leaves the previous one byte-identical. The previous final model's files stay until
    the new final model replaces them.
    """
    output_dir = Path(output_dir)
    for child in output_dir.iterdir():
        if child.name.startswith(CHECKPOINT_PREFIX) and child.is_dir():
            shutil.rmtree(child)
    (output_dir / FINISHED_MARKER).unlink(missing_ok=True)
    logger.info("--overwrite_output_dir: removed the previous run's checkpoints and %s from %s", FINISHED_MARKER,
                output_dir)


def is_complete_checkpoint(path: Path) -> bool:
    """A checkpoint is complete once the Trainer wrote trainer_state.json (its last file) and it parses."""
    state = path / "trainer_state.json"
    if not state.is_file() or not (path / "optimizer.pt").is_file() or not (path / "scheduler.pt").is_file():
        return False
    try:
        json.loads(state.read_text())
    except (OSError, ValueError):
        return False
    return True


def find_resumable_checkpoint(output_dir: str | Path) -> Path | None:
    """Newest complete ``checkpoint-N`` in ``output_dir``; half-written ones are skipped with a warning."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    candidates = []
    for child in output_dir.iterdir():
        suffix = child.name[len(CHECKPOINT_PREFIX):]
        if child.is_dir() and child.name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit():
            candidates.append((int(suffix), child))
    for _, path in sorted(candidates, reverse=True):
        if is_complete_checkpoint(path):
            return path
        logger.warning("Skipping incomplete checkpoint %s (interrupted while saving)", path)
    return None


def warn_if_process_count_changed(checkpoint: str | Path | None, processes: int) -> None:
    """Resuming is exact only with the process count that wrote the checkpoint (one RNG file per rank)."""
    if checkpoint is None:
        return
    written_by = len(list(Path(checkpoint).glob("rng_state_*.pth"))) or 1
    if written_by != processes:
        logger.warning("%s was written by %d process(es) and this run has %d: training continues, but with other "
                       "batches than the interrupted run would have seen (resume with --num_processes %d for an "
                       "exact continuation)", checkpoint, written_by, processes, written_by)


def resolve_resume(resume: str, output_dir: str | Path, overwrite_finished: bool) -> str | None:
    """Turn --resume_from_checkpoint into a checkpoint path for ``Trainer.train`` (None = fresh start).

    ``overwrite_finished``: --overwrite_output_dir over a finished run starts fresh; over an
    interrupted one (no metrics.json yet) the same command resumes it, like any other run.
    """
    if resume in (None, "", "none", "None", "false", "False"):
        return None
    if resume == "auto":
        checkpoint = None if overwrite_finished else find_resumable_checkpoint(output_dir)
        if checkpoint is None:
            logger.info("No checkpoint to resume from in %s: starting fresh", output_dir)
            return None
        logger.info("Resuming from %s", checkpoint)
        return str(checkpoint)
    path = Path(resume)
    if not path.is_dir():
        raise UserError(f"--resume_from_checkpoint: no such checkpoint directory: {path}")
    if not is_complete_checkpoint(path):
        raise UserError(f"--resume_from_checkpoint: {path} is not a complete checkpoint (no trainer_state.json, "
                        f"optimizer.pt or scheduler.pt)")
    return str(path)


# ---------------------------------------------------------------------------- interruption


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


# ---------------------------------------------------------------------------- precision and trainer arguments


@dataclass
class Precision:
    name: str
    fp16: bool = False
    bf16: bool = False


def resolve_precision(requested: str) -> Precision:
    """AMP only on a GPU, with fp32 master weights; fp32 on CPU (with a warning if AMP was asked for)."""
    if not torch.cuda.is_available():
        if requested in ("fp16", "bf16"):
            logger.warning("--%s needs a GPU; none found, training in fp32", requested)
        return Precision("fp32")
    bf16_ok = torch.cuda.is_bf16_supported()
    if requested == "auto":
        # XLM-R (bge-m3) under fp16 is prone to NaN/zero loss; bf16 has fp32's range.
        return Precision("bf16", bf16=True) if bf16_ok else Precision("fp16", fp16=True)
    if requested == "bf16" and not bf16_ok:
        raise UserError("--bf16: this GPU does not support bfloat16 (use --fp16)")
    if requested == "fp16":
        return Precision("fp16", fp16=True)
    if requested == "bf16":
        return Precision("bf16", bf16=True)
    return Precision("fp32")


def warmup_for_trainer(warmup: float) -> int | float:
    """transformers v5 takes a float < 1 as a ratio and an int as steps."""
    return float(warmup) if warmup < 1 else int(warmup)


def total_optimizer_steps(num_examples: int, batch_size: int, grad_accum: int, epochs: int, world_size: int,
                          max_steps: int = -1) -> int:
    if max_steps > 0:
        return max_steps
    batches = math.ceil(num_examples / (batch_size * world_size))
    return max(1, math.ceil(batches / grad_accum)) * epochs


def _has_accelerator() -> bool:
    """A GPU (or another torch accelerator) is present."""
    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    if accelerator is not None and hasattr(accelerator, "is_available"):
        return bool(accelerator.is_available())
    return torch.cuda.is_available()


def trainer_kwargs(args: argparse.Namespace, precision: Precision, has_dev: bool, metric_key: str,
                   output_dir: str, eval_on_start: bool = True,
                   find_unused_parameters: bool = False) -> dict[str, Any]:
    """Arguments common to SentenceTransformerTrainingArguments and CrossEncoderTrainingArguments.

    ``find_unused_parameters`` (DDP under accelerate launch, checked with torch 2.13 and
    sentence-transformers 6.2 on 2 gloo processes): True for a SentenceTransformer, whose encoder's
    pooler (BERT, XLM-R) is trainable but unused by mean/CLS pooling, so that with False DDP stops at
    the second step ("Expected to have finished reduction"). False for a CrossEncoder: its forward
    returns a BatchEncoding, which DDP cannot look into, so with True it takes every parameter for
    unused and fails ("marked ready twice"); every parameter is used there anyway. ``ddp_static_graph``
    would serve the first, but for the second it silently skips the all-reduce of the first step and
    the ranks end with different weights.

    ``eval_on_start=False`` when resuming: the base model's dev metrics are already in the restored
    log history, and a second evaluation would count against early stopping's patience.
    """
    kwargs: dict[str, Any] = dict(
        output_dir=output_dir,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=max(args.batch_size, 16),
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=args.lr,
        warmup_steps=warmup_for_trainer(args.warmup_steps),
        lr_scheduler_type=args.scheduler,
        fp16=precision.fp16,
        bf16=precision.bf16,
        # transformers v5 name for gradient checkpointing; non-reentrant works under DDP and with frozen layers.
        activation_checkpointing=args.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if args.gradient_checkpointing else None,
        save_strategy="steps",
        save_steps=args.checkpoint_save_steps,
        save_total_limit=args.save_total_limit,
        logging_steps=max(1, min(10, args.evaluation_steps)),
        logging_first_step=True,
        report_to=["tensorboard"],
        seed=args.seed,
        data_seed=args.seed,
        dataloader_num_workers=args.dataloader_num_workers,
        # DDP (accelerate launch); frozen layers need nothing here (requires_grad=False parameters are
        # not DDP's). See the docstring for why this is per script and why not ddp_static_graph.
        ddp_find_unused_parameters=find_unused_parameters,
        # A multi-GPU accelerate config on a machine without a GPU: N gloo processes on the CPU
        # (without this, each process would train alone on a full copy of the data).
        use_cpu=int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _has_accelerator(),
        disable_tqdm=not local_rank_is_main(),
    )
    if has_dev:
        kwargs.update(
            eval_strategy="steps",
            eval_steps=args.evaluation_steps,
            eval_on_start=eval_on_start,
            load_best_model_at_end=True,
            metric_for_best_model=metric_key,
            greater_is_better=True,
        )
    else:
        kwargs.update(eval_strategy="no")
    return kwargs


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


# ---------------------------------------------------------------------------- distributed helpers


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world_size() -> int:
    return torch.distributed.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return not is_distributed() or torch.distributed.get_rank() == 0


def compute_on_main_and_share(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and give every rank its result (mining, splits: one truth for all ranks)."""
    if not is_distributed():
        return fn()
    payload = [fn() if is_main_process() else None]
    torch.distributed.broadcast_object_list(payload, src=0)
    return payload[0]


# ---------------------------------------------------------------------------- outputs


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=str))
    tmp.replace(path)


def dev_metrics_from_history(log_history: list[dict[str, Any]], prefix: str) -> list[tuple[int, dict[str, float]]]:
    """(step, metrics) for each dev evaluation the Trainer logged, metric names without the prefix."""
    points = []
    for entry in log_history:
        values = {k[len(prefix):]: v for k, v in entry.items() if k.startswith(prefix)}
        if values:
            points.append((int(entry.get("step", 0)), values))
    return points


def plot_training_curves(log_history: list[dict[str, Any]], prefix: str, path: str | Path,
                         metric_names: tuple[str, ...] = ("ndcg@5", "mrr@5", "recall@5", "hit@5")) -> Path:
    """PNG of training loss and dev metrics against optimizer steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    dev = dev_metrics_from_history(log_history, prefix)
    fig, (ax_loss, ax_dev) = plt.subplots(1, 2, figsize=(11, 4))
    if losses:
        ax_loss.plot(*zip(*losses), marker=".", color="tab:red")
    ax_loss.set(title="training loss", xlabel="step", ylabel="loss")
    for name in metric_names:
        series = [(step, values[name]) for step, values in dev if name in values]
        if series:
            ax_dev.plot(*zip(*series), marker="o", label=name)
    ax_dev.set(title="dev metrics", xlabel="step", ylim=(0, 1.02))
    if dev:
        ax_dev.legend(loc="lower right")
    for ax in (ax_loss, ax_dev):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_metrics_table(columns: dict[str, dict[str, float]], names: tuple[str, ...], ks: tuple[int, ...]) -> str:
    """Plain-text table: one row per metric@k, one column per run (e.g. base / fine-tuned)."""
    headers = ["metric"] + list(columns)
    rows = []
    for name in names:
        for k in ks:
            key = f"{name}@{k}"
            rows.append([key] + [f"{values.get(key, float('nan')):.4f}" for values in columns.values()])
    widths = [max(len(str(r[i])) for r in rows + [headers]) for i in range(len(headers))]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def exit_after_interrupt(callback: InterruptCheckpointCallback, output_dir: str) -> int:
    checkpoint = find_resumable_checkpoint(output_dir)
    logger.warning("Interrupted: checkpoint saved to %s. Run the same command with --resume_from_checkpoint auto "
                   "to continue.", checkpoint)
    sys.stdout.flush()
    return callback.exit_code

"""Precision and the Trainer arguments shared by the three fine-tuning scripts."""

from __future__ import annotations

import argparse
import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import torch

from ragtune.core.errors import UserError
from ragtune.train.distributed import local_rank_is_main

logger = logging.getLogger(__name__)


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


def report_to(trackers: list[str]) -> list[str] | str:
    """--report_to as TrainingArguments takes it: the trackers, or "none"."""
    return "none" if "none" in trackers else list(trackers)


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
        save_only_model=args.save_only_model,
        logging_steps=args.logging_steps or max(1, min(10, args.evaluation_steps)),
        logging_first_step=True,
        report_to=report_to(args.report_to),
        **({"run_name": args.run_name} if args.run_name else {}),
        seed=args.seed,
        data_seed=args.seed,
        dataloader_num_workers=args.dataloader_num_workers,
        # Pinned memory only helps a copy to a GPU; on a CPU torch warns about it at every epoch.
        dataloader_pin_memory=_has_accelerator(),
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


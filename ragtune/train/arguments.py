"""Command-line flags shared by the fine-tuning scripts, and their validation.

Each script builds its parser from these groups with its own defaults (the template command's
values), so the same flag means the same thing in every script.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any, Collection, Sequence

from ragtune.audit import add_audit_args
from ragtune.core.cli import add_weight_rule_arg, new_parser
from ragtune.core.data import SAMPLE_CORPUS, SAMPLE_TRAIN, check_input_file
from ragtune.core.errors import UserError
from ragtune.core.metrics import DEFAULT_KS, TRAINING_METRICS
from ragtune.core.model_card import hub_id_arg, language_arg, license_arg
from ragtune.retrieval.first_stage import FIRST_STAGES
from ragtune.retrieval.negatives import NEGATIVE_SOURCES

# --report_to's trackers (transformers' integrations), and the modules each needs (the first is the pip package).
TRACKER_MODULES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",),
                   "trackio": ("trackio",)}
REPORT_TO = (*TRACKER_MODULES, "none")


def new_training_parser(description: str | None, *, base_model: str, base_model_help: str
                        ) -> tuple[argparse.ArgumentParser, argparse._ArgumentGroup]:
    """A fine-tuning script's parser and its "model" group, which starts with ``--base_model``."""
    parser = new_parser(description)
    model = parser.add_argument_group("model")
    model.add_argument("--base_model", "--model_name_or_path", default=base_model, help=base_model_help)
    model.add_argument("--base_model_id", type=hub_id_arg, default=None, metavar="ORG/NAME",
                       help="The Hub id of the model a local --base_model folder is a copy of: the model card's "
                            "base_model. Default: what the folder records (a Hugging Face cache path, its own card, "
                            "its config.json), else left out of the card (never a local path).")
    card = parser.add_argument_group("model card")
    card.add_argument("--dataset_name", type=hub_id_arg, default=None, metavar="ORG/NAME",
                      help="The Hub dataset the training data comes from, for the card's datasets metadata.")
    card.add_argument("--language", nargs="+", type=language_arg, default=["vi"], metavar="CODE",
                      help="The card's language metadata (ISO 639 codes).")
    card.add_argument("--license", type=license_arg, default=None,
                      help="The card's license (a Hub license id, e.g. apache-2.0, mit). Default: the base model's, "
                           "as its card records it.")
    return parser, model


def add_run_args(parser: argparse.ArgumentParser, **training_defaults: Any) -> None:
    """The groups every fine-tuning script has: data, output and resuming, data audit, and training
    (``training_defaults``: the script's template values, see :func:`add_training_args`)."""
    add_data_args(parser)
    add_output_args(parser, default_output_dir=None)
    add_audit_args(parser)
    add_training_args(parser, **training_defaults)


def add_data_args(parser: argparse.ArgumentParser, dev_ratio: float = 0.2) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--corpus", default=str(SAMPLE_CORPUS),
                       help="Passages: CSV/XLSX with columns STT, Văn bản (or id, text), or JSONL with id, text. "
                            "Default: the sample corpus shipped with ragtune.")
    group.add_argument("--train_data", default=str(SAMPLE_TRAIN),
                       help="Labelled queries: CSV/XLSX with Query, Ground truth document (e.g. 15 or \"15, 37\"), "
                            "or query, relevant_ids; or FlagEmbedding JSONL {query, pos, neg}. Default: the sample "
                            "training queries.")
    group.add_argument("--dev_ratio", type=float, default=dev_ratio,
                       help="Share of queries held out (at the query level, seeded) for dev metrics, checkpoint "
                            "selection and early stopping; 0 trains on everything and keeps the last step.")
    group.add_argument("--seed", type=int, default=42, help="Seed for the split, negative sampling, shuffling and init.")
    group.add_argument("--expansions", default=None, metavar="FILE",
                       help="Query expansion map (CSV: abbreviation, expansion; e.g. clb,câu lạc bộ) applied to every "
                            "query a first stage sees (mining, dev metrics, fusion weights; the embedding model trains "
                            "on expanded queries) and saved with the model (query_expansions.csv), so evaluation and "
                            "prediction apply the same map. Off by default: on the NeoRAG data it did not help "
                            "(docs/split_and_expansions.md).")


def add_output_args(parser: argparse.ArgumentParser, default_output_dir: str | None) -> None:
    group = parser.add_argument_group("output and resuming")
    group.add_argument("--output_dir", default=default_output_dir,
                       help="Where checkpoints, the final model, metrics.json, TensorBoard logs and curves go. "
                            "Stable by default (derived from --base_model), so `--resume_from_checkpoint auto` finds "
                            "the previous run.")
    group.add_argument("--overwrite_output_dir", action="store_true",
                       help="Allow starting over in an output dir that holds a finished model (its checkpoints "
                            "are removed first).")
    group.add_argument("--resume_from_checkpoint", default="auto", metavar="auto|none|PATH",
                       help="'auto' resumes from the newest complete checkpoint in --output_dir (starts fresh if "
                            "there is none); 'none' always starts fresh; or a checkpoint directory.")


def add_training_args(parser: argparse.ArgumentParser, *, epochs: int, batch_size: int, lr: float,
                      warmup_steps: float, max_seq_length: int, evaluation_steps: int,
                      checkpoint_save_steps: int, gradient_accumulation_steps: int = 1,
                      early_stopping_patience: int = 4, metric_for_best_model: str = "ndcg@5",
                      metric_choices: Sequence[str] | None = None, gradient_checkpointing: bool = False) -> None:
    """The Trainer flags, with the script's template values as defaults.

    ``metric_choices``: the dev metrics ``--metric_for_best_model`` takes (default: the ranking metrics at
    DEFAULT_KS). ``gradient_checkpointing``: on by default, with ``--no_gradient_checkpointing`` to turn it off.
    """
    group = parser.add_argument_group("training", "A flag's second name (--num_train_epochs, --learning_rate, ...) is "
                                      "its Hugging Face TrainingArguments name: either spelling works.")
    group.add_argument("--epochs", "--num_train_epochs", type=int, default=epochs,
                       help="Number of passes over the training examples.")
    group.add_argument("--batch_size", "--per_device_train_batch_size", type=int, default=batch_size,
                       help="Examples per device per step.")
    group.add_argument("--gradient_accumulation_steps", type=int, default=gradient_accumulation_steps,
                       help="Steps to accumulate before an optimizer update (effective batch = batch_size x this x "
                            "number of processes).")
    group.add_argument("--lr", "--learning_rate", type=float, default=lr, help="Peak learning rate (AdamW).")
    group.add_argument("--warmup_steps", type=float, default=warmup_steps,
                       help="Linear warm-up: optimizer steps if >= 1, or a fraction of all steps if < 1 "
                            "(capped at the total number of steps).")
    group.add_argument("--warmup_ratio", dest="warmup_steps", type=fraction_of_steps, default=argparse.SUPPRESS,
                       metavar="RATIO",
                       help="Linear warm-up as a fraction of all optimizer steps, in [0, 1): the same as "
                            "--warmup_steps below 1 (give one of the two).")
    group.add_argument("--scheduler", "--lr_scheduler_type", choices=["linear", "cosine", "constant"],
                       default="linear", help="Learning-rate schedule after warm-up.")
    group.add_argument("--max_seq_length", type=int, default=max_seq_length, help="Tokens per input; longer are cut.")
    group.add_argument("--evaluation_steps", "--eval_steps", type=int, default=evaluation_steps,
                       help="Compute dev metrics every N optimizer steps (also before training).")
    group.add_argument("--checkpoint_save_steps", "--save_steps", type=int, default=checkpoint_save_steps,
                       help="Save a resumable checkpoint every N optimizer steps; must be a multiple of "
                            "--evaluation_steps so the best checkpoint can be kept.")
    group.add_argument("--save_total_limit", type=int, default=2,
                       help="Checkpoints kept on disk while training, the best one included.")
    group.add_argument("--save_only_model", action="store_true",
                       help="Checkpoints hold the weights only, without the optimizer and scheduler state (fp32: "
                            "~2.3 GB each instead of ~4.3 GB for bge-m3 with --freeze_layers 4, ~6.8 GB for "
                            "bge-reranker-v2-m3). Such checkpoints are NOT resumable: an interrupted run starts "
                            "over.")
    group.add_argument("--keep_checkpoints", action="store_true", default=True,
                       help="Keep the checkpoint-N folders once the run has finished (a finished run is not resumed; "
                            "they let you inspect or reload a step).")
    group.add_argument("--no_keep_checkpoints", dest="keep_checkpoints", action="store_false",
                       default=argparse.SUPPRESS,
                       help="Delete the checkpoint-N folders once the run has finished and saved its final model: "
                            "the output dir keeps the model, metrics.json, trainer_state.json and the logs.")
    group.add_argument("--early_stopping_patience", type=int, default=early_stopping_patience,
                       help="Stop after this many dev evaluations without improvement; 0 disables early stopping.")
    group.add_argument("--metric_for_best_model", default=metric_for_best_model,
                       help="Dev metric that picks the best checkpoint and drives early stopping: one of "
                            + (", ".join(metric_choices) + "." if metric_choices else
                               ", ".join(f"{m}@k" for m in TRAINING_METRICS) + f" with k in {list(DEFAULT_KS)}."))
    group.add_argument("--max_steps", type=int, default=-1,
                       help="Stop after this many optimizer steps (overrides --epochs when > 0).")
    precision = group.add_mutually_exclusive_group()
    precision.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], default="auto",
                           help="Mixed precision on GPU with fp32 master weights. 'auto': bf16 where the GPU supports "
                                "it, else fp16; always fp32 on CPU.")
    precision.add_argument("--fp16", dest="precision", action="store_const", const="fp16",
                           help="Shorthand for --precision fp16 (AMP; fp32 on a machine without a GPU).")
    precision.add_argument("--bf16", dest="precision", action="store_const", const="bf16",
                           help="Shorthand for --precision bf16.")
    if gradient_checkpointing:
        group.add_argument("--gradient_checkpointing", action="store_true", default=True,
                           help="Recompute activations in the backward pass (on by default here: ~3x less "
                                "activation memory, ~30%% slower).")
        group.add_argument("--no_gradient_checkpointing", dest="gradient_checkpointing", action="store_false",
                           help="Keep every activation (faster, on a GPU with memory to spare).")
    else:
        group.add_argument("--gradient_checkpointing", action="store_true",
                           help="Recompute activations in the backward pass: less GPU memory, ~30%% slower.")
    group.add_argument("--dataloader_num_workers", type=int, default=0, help="Worker processes for data loading.")
    add_logging_args(parser)


def fraction_of_steps(text: str) -> float:
    """``--warmup_ratio``'s type: a fraction in [0, 1) (a ratio of 1 would never reach the peak learning rate)."""
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction of all optimizer steps in [0, 1), got {text}")
    return value


def add_logging_args(parser: argparse.ArgumentParser) -> None:
    """What a run reports and prints: TensorBoard (or another tracker) gets every number, the console a summary."""
    group = parser.add_argument_group("logging")
    group.add_argument("--logging_steps", type=int, default=None,
                       help="Log the training loss and learning rate every N optimizer steps (TensorBoard, "
                            "trainer_state.json). Default: every --evaluation_steps, at most 10.")
    group.add_argument("--report_to", nargs="+", choices=REPORT_TO, default=["tensorboard"], metavar="TRACKER",
                       help=f"Where the Trainer logs losses and dev metrics: one or more of {', '.join(REPORT_TO)} "
                            f"(TensorBoard: under OUTPUT_DIR/runs/). Each needs its package installed.")
    group.add_argument("--run_name", default=None,
                       help="Run name shown by wandb / mlflow / trackio (default: theirs).")
    group.add_argument("--verbose", action="store_true",
                       help="Print the detail too: the Trainer's raw log dictionaries, sentence-transformers' INFO "
                            "lines, the library warnings known to be harmless, transformers' full load reports, every "
                            "cutoff in the final dev table (the console otherwise shows one line per dev evaluation).")


def validate_report_to(report_to: Sequence[str]) -> None:
    """``none`` alone, and each tracker's package installed: one line naming what to install."""
    if "none" in report_to and len(report_to) > 1:
        raise UserError(f"--report_to none cannot be combined with {' '.join(t for t in report_to if t != 'none')}")
    for tracker in report_to:
        if tracker != "none" and not any(importlib.util.find_spec(module) for module in TRACKER_MODULES[tracker]):
            raise UserError(f"--report_to {tracker}: the {tracker} package is not installed (pip install "
                            f"{TRACKER_MODULES[tracker][0]}), or pass --report_to none")


def add_negative_args(parser: argparse.ArgumentParser, *, num_hard_negatives: int, source: str = "both",
                      rank_range: tuple[int, int] = (3, 50), num_random_negatives: int | None = None) -> None:
    """``num_random_negatives`` (the reranker's) also adds --num_random_negatives with that default."""
    group = parser.add_argument_group("hard negatives")
    group.add_argument("--num_hard_negatives", type=int, default=num_hard_negatives,
                       help="Mined hard negatives per (query, positive) pair; never a passage labelled relevant "
                            "to that query.")
    group.add_argument("--hard_negative_source", choices=NEGATIVE_SOURCES, default=source,
                       help="Where hard negatives come from: BM25, the dense model, both interleaved, or none.")
    group.add_argument("--first_stage", choices=FIRST_STAGES, default=None,
                       help="The retriever hard negatives are mined from (overrides --hard_negative_source), and in "
                            "the reranker script the one whose top candidates are reranked on dev: BM25, the dense "
                            "model, or hybrid (their normalised scores fused with a weight chosen on dev queries). "
                            "Default: --hard_negative_source for mining; the reranker's dev first stage is the "
                            "--embedding_model when given, else BM25.")
    group.add_argument("--hard_negative_range", type=int, nargs=2, default=list(rank_range), metavar=("MIN", "MAX"),
                       help="Draw hard negatives from these ranks (1-based, inclusive) of each source; skipping the "
                            "top ranks avoids unlabelled positives.")
    add_weight_rule_arg(group, "the dev queries")
    if num_random_negatives is not None:
        group.add_argument("--num_random_negatives", type=int, default=num_random_negatives,
                           help="Uniform random negatives per (query, positive) pair, besides the hard ones; never a "
                                "passage labelled relevant to the query.")


def validate_training_args(args: argparse.Namespace, min_batch_size: int = 1,
                           valid_metrics: Collection[str] | None = None) -> None:
    """Flag values that argparse's types cannot check; all raise UserError naming the flag.

    ``valid_metrics``: accepted --metric_for_best_model values (default: the ranking metrics@k).
    The hard-negative and --freeze_layers checks run when the script has those flags.
    """
    checks: list[tuple[bool, str]] = [
        (args.batch_size >= min_batch_size,
         f"--batch_size must be at least {min_batch_size}"
         + (" (in-batch negatives need at least 2 examples per batch)" if min_batch_size == 2 else "")
         + f", got {args.batch_size}"),
        (args.epochs >= 1 or args.max_steps > 0, f"--epochs must be at least 1, got {args.epochs}"),
        (args.lr > 0, f"--lr must be positive, got {args.lr}"),
        (args.warmup_steps >= 0, f"--warmup_steps must be >= 0, got {args.warmup_steps}"),
        (args.gradient_accumulation_steps >= 1,
         f"--gradient_accumulation_steps must be at least 1, got {args.gradient_accumulation_steps}"),
        (args.max_seq_length >= 8, f"--max_seq_length must be at least 8, got {args.max_seq_length}"),
        (args.evaluation_steps >= 1, f"--evaluation_steps must be at least 1, got {args.evaluation_steps}"),
        (args.checkpoint_save_steps >= 1, f"--checkpoint_save_steps must be at least 1, got {args.checkpoint_save_steps}"),
        (args.logging_steps is None or args.logging_steps >= 1,
         f"--logging_steps must be at least 1, got {args.logging_steps}"),
        (args.save_total_limit >= 1, f"--save_total_limit must be at least 1, got {args.save_total_limit}"),
        (args.early_stopping_patience >= 0, f"--early_stopping_patience must be >= 0, got {args.early_stopping_patience}"),
        (0.0 <= args.dev_ratio < 1.0, f"--dev_ratio must be in [0, 1), got {args.dev_ratio}"),
    ]
    if hasattr(args, "freeze_layers"):
        checks.append((args.freeze_layers >= 0, f"--freeze_layers must be >= 0 (0 trains every layer), "
                                                f"got {args.freeze_layers}"))
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    if args.dev_ratio > 0 and args.checkpoint_save_steps % args.evaluation_steps:
        raise UserError(f"--checkpoint_save_steps ({args.checkpoint_save_steps}) must be a multiple of "
                        f"--evaluation_steps ({args.evaluation_steps}) so that the best checkpoint is kept")
    valid = set(valid_metrics) if valid_metrics is not None else {
        f"{m}@{k}" for m in TRAINING_METRICS for k in DEFAULT_KS}
    if args.metric_for_best_model not in valid:
        raise UserError(f"--metric_for_best_model must be one of {', '.join(sorted(valid))}; "
                        f"got {args.metric_for_best_model!r}")
    validate_report_to(args.report_to)
    if hasattr(args, "num_hard_negatives"):
        validate_negative_args(args)
    for flag in ("corpus", "train_data"):
        if getattr(args, flag, None) is not None:
            check_input_file(getattr(args, flag), f"--{flag}")


def validate_negative_args(args: argparse.Namespace) -> None:
    """The flags of ``add_negative_args``; raise UserError naming the flag."""
    if args.num_hard_negatives < 0:
        raise UserError(f"--num_hard_negatives must be >= 0, got {args.num_hard_negatives}")
    lo, hi = args.hard_negative_range
    if lo < 1 or hi < lo:
        raise UserError(f"--hard_negative_range must be two ranks 1 <= MIN <= MAX, got {lo} {hi}")


def default_output_dir(base_model: str, suffix: str) -> str:
    """``outputs/<model name>-<suffix>``: stable across runs so that resuming finds it."""
    name = Path(base_model.rstrip("/")).name or "model"
    return str(Path("outputs") / f"{name}-{suffix}")


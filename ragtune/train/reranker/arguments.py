"""The reranker script's command line: its flags and their checks, in one place."""

from __future__ import annotations

import argparse

from ragtune.core.errors import UserError
from ragtune.core.metrics import DEFAULT_KS
from ragtune.train.arguments import add_negative_args, add_run_args, new_training_parser, validate_training_args

# The default --output_dir is outputs/<base model name>-reranker (ragtune.train.arguments.default_output_dir).
OUTPUT_SUFFIX = "reranker"


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The reranker script's flags, with the template command's values as defaults."""
    parser, model = new_training_parser(description, base_model="BAAI/bge-reranker-v2-m3", base_model_help=(
        "Reranker to start from (e.g. namdp-ptit/ViRanker for Vietnamese), as a Hub id or a local "
        "folder. A plain encoder gets a new 1-logit head, which starts untrained."))
    model.add_argument("--embedding_model", default=None,
                       help="Optional fine-tuned embedding model (e.g. the output of fine_tune_bge_m3.py): a "
                            "second source of hard negatives, and the first stage in dev evaluation instead of BM25.")
    model.add_argument("--rerank_top_n", type=int, default=20,
                       help="Dev evaluation reranks this many first-stage candidates per query.")
    add_run_args(parser, epochs=4, batch_size=3, lr=2e-5, warmup_steps=0.1, max_seq_length=512,
                 evaluation_steps=10, checkpoint_save_steps=20, gradient_accumulation_steps=8)
    # Ranks 1-30: the reranker's job is to order the first stage's top candidates, so it learns from them.
    add_negative_args(parser, num_hard_negatives=2, rank_range=(1, 30), num_random_negatives=1)
    return parser


def validate_args(args: argparse.Namespace) -> None:
    """Every check of the reranker script's flags; raise UserError naming the flag."""
    validate_training_args(args, min_batch_size=1)
    if args.num_random_negatives < 0:
        raise UserError(f"--num_random_negatives must be >= 0, got {args.num_random_negatives}")
    if args.rerank_top_n < max(DEFAULT_KS):
        raise UserError(f"--rerank_top_n must be at least {max(DEFAULT_KS)} (metrics go up to @{max(DEFAULT_KS)}), "
                        f"got {args.rerank_top_n}")
    if args.hard_negative_source == "dense" and not args.embedding_model:
        raise UserError("--hard_negative_source dense needs --embedding_model (the reranker itself cannot retrieve)")
    if args.first_stage in ("dense", "hybrid") and not args.embedding_model:
        raise UserError(f"--first_stage {args.first_stage} needs --embedding_model (the reranker itself cannot "
                        f"retrieve)")
    if args.num_hard_negatives + args.num_random_negatives == 0:
        raise UserError("--num_hard_negatives and --num_random_negatives are both 0: a reranker needs negatives")

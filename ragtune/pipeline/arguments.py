"""The flags that choose and run a RAG pipeline, shared by predict_rag.py and ``python -m ragtune.app``: the same
flag means the same thing in both, and is checked the same way."""

from __future__ import annotations

import argparse
from pathlib import Path

from ragtune.core.data import SAMPLE_CORPUS
from ragtune.core.errors import UserError
from ragtune.core.output_paths import check_args_paths
from ragtune.pipeline.spec import read_evaluation
from ragtune.retrieval.first_stage import FIRST_STAGES

# Flags that name the system's models and fusions: --from rebuilds them from the evaluation instead.
MODEL_FLAGS = ("embedding_model", "reranker_model", "first_stage", "dense_weight", "rerank_top_n",
               "no_reranker_fusion", "max_seq_length", "reranker_max_length")
RERANK_TOP_N = 20  # the reranker's depth without --from, as evaluate_rag.py's default


def add_system_args(parser: argparse.ArgumentParser) -> None:
    """--from DIR --system NAME (an evaluation's system), or the models named one by one."""
    system = parser.add_argument_group("the system: an evaluation's, or named models")
    system.add_argument("--from", dest="from_dir", default=None, metavar="DIR",
                        help="An evaluate_rag.py --output_dir: the system is rebuilt from its systems.json.")
    system.add_argument("--system", default="best",
                        help="With --from: a system name as in its results.md, or best (by its main metric).")
    system.add_argument("--corpus", default=None,
                        help="Passages (as evaluate_rag.py reads them). Default: the corpus the --from evaluation "
                             "used; without --from, the sample corpus.")
    system.add_argument("--expansions", default=None, metavar="FILE",
                        help="Query expansion map (CSV: abbreviation, expansion) for the first stage. Default: the "
                             "map the system was evaluated with (--from), or the one saved with its models; this "
                             "file replaces it (with a warning when they differ).")
    system.add_argument("--embedding_model", default=None, help="Embedding model (folder or Hub id), without --from.")
    system.add_argument("--reranker_model", default=None, help="Cross-encoder reranker, without --from.")
    system.add_argument("--first_stage", choices=FIRST_STAGES, default=None,
                        help="Default: hybrid when the embedding model saved a fusion weight, dense when it saved "
                             "none, bm25 without an embedding model.")
    system.add_argument("--dense_weight", type=float, default=None,
                        help="The hybrid's dense weight at depth 100, instead of the one the embedding model saved.")
    system.add_argument("--rerank_top_n", type=int, default=None,
                        help=f"First-stage passages the reranker reorders, without --from (default {RERANK_TOP_N}; "
                             "a reranker that saved a fusion weight reranks and fuses the top N it was chosen at).")
    system.add_argument("--no_reranker_fusion", action="store_true",
                        help="Rerank alone, even when the reranker saved a fusion weight.")
    system.add_argument("--max_seq_length", type=int, default=None, help="Embedding model's tokens per input.")
    system.add_argument("--reranker_max_length", type=int, default=None, help="Reranker's tokens per pair.")


def add_generator_args(parser: argparse.ArgumentParser, workers: int = 4) -> None:
    """The generator: a local model (+ LoRA adapter) or an OpenAI-compatible endpoint; with --from, the
    evaluation's unless these name another (or --no_generator)."""
    gen = parser.add_argument_group("answer generation (optional)")
    gen.add_argument("--generator_local", default=None, metavar="PATH",
                     help="A local causal LM folder or .gguf file, prompted as fine_tune_generator.py trains.")
    gen.add_argument("--generator_adapter", default=None, metavar="PATH", help="A peft LoRA adapter folder.")
    gen.add_argument("--generator_base_url", default=None, help="OpenAI-compatible server of the generator.")
    gen.add_argument("--generator_model", default=None, help="Generator model name on that server.")
    gen.add_argument("--generator_api_key", default=None,
                     help="API key (default: $OPENAI_API_KEY, sent only to an api.openai.com URL). Never saved.")
    gen.add_argument("--generator_max_new_tokens", type=int, default=256, help="Longest generated answer.")
    gen.add_argument("--no_generator", action="store_true",
                     help="Retrieve only, even when the --from evaluation had a generator.")
    gen.add_argument("--generator_workers", type=int, default=workers, help="Concurrent requests to an endpoint.")
    gen.add_argument("--endpoint_timeout", type=float, default=120.0, help="Seconds per request.")
    gen.add_argument("--endpoint_retries", type=int, default=3,
                     help="Retries of a failed request (connection refused, timeout, 429, 5xx), with backoff.")
    gen.add_argument("--endpoint_backoff", type=float, default=1.0, help="First backoff in seconds (doubles).")


def add_run_args(parser: argparse.ArgumentParser, cache_help: str) -> None:
    run = parser.add_argument_group("run")
    run.add_argument("--cache_dir", default=None, help=cache_help)
    run.add_argument("--batch_size", type=int, default=None,
                     help="Encoding and reranking batch size (default: the evaluation's, else 32).")
    run.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu).")


def validate_pipeline_args(args: argparse.Namespace) -> None:
    """The flags above: numbers in range, --from or model flags (not both), generator flags that go together."""
    for flag in ("k", "rerank_top_n", "generator_max_new_tokens", "generator_workers"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise UserError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch_size must be at least 1, got {args.batch_size}")
    if args.dense_weight is not None and not 0.0 <= args.dense_weight <= 1.0:
        raise UserError(f"--dense_weight must be in [0, 1], got {args.dense_weight}")
    if args.endpoint_retries < 0 or args.endpoint_timeout <= 0 or args.endpoint_backoff < 0:
        raise UserError("--endpoint_retries and --endpoint_backoff must be >= 0 and --endpoint_timeout > 0")
    if args.cache_dir and Path(args.cache_dir).exists() and not Path(args.cache_dir).is_dir():
        raise UserError(f"--cache_dir {args.cache_dir} is a file; give a folder")
    if args.from_dir:
        given = [f"--{flag}" for flag in MODEL_FLAGS if getattr(args, flag) not in (None, False)]
        if given:
            raise UserError(f"--from {args.from_dir} rebuilds the evaluated system: drop {', '.join(given)} (or drop "
                            f"--from to name the models yourself)")
    else:
        if args.system != "best":
            raise UserError(f"--system {args.system!r} names a system of an evaluation: give --from DIR too")
        args.corpus = args.corpus or str(SAMPLE_CORPUS)
    if bool(args.generator_base_url) != bool(args.generator_model):
        raise UserError("--generator_base_url and --generator_model go together")
    if args.generator_base_url and args.generator_local:
        raise UserError("give either --generator_base_url/--generator_model or --generator_local, not both")
    if args.generator_adapter and not args.generator_local:
        raise UserError("--generator_adapter is a LoRA for --generator_local; give --generator_local too")
    if args.no_generator and (args.generator_local or args.generator_base_url):
        raise UserError("--no_generator with --generator_local/--generator_base_url: choose one")


def check_pipeline_paths(args: argparse.Namespace, outputs: tuple[str, ...]) -> None:
    """The output guard for a script that runs a pipeline: with --from, the corpus and models the evaluation
    recorded are inputs too (no flag names them, and --output must not replace them)."""
    recorded = read_evaluation(args.from_dir).input_paths() if args.from_dir else None
    check_args_paths(args, outputs=outputs, more_inputs=recorded)

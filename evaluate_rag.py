#!/usr/bin/env python
r"""Benchmark base vs fine-tuned retrievers and rerankers on held-out queries, and publish the winners.

    python evaluate_rag.py --corpus CLB_PROPTIT.csv --test_data data/train_data_proptit_test.xlsx \
        --train_data data/train_data_proptit_train.xlsx \
        --embedding_models BAAI/bge-m3 outputs/bge-m3-finetuned \
        --reranker_models outputs/bge-reranker-v2-m3-reranker

Systems, side by side: BM25; each embedding model; each embedding model fused with BM25 (hybrid:
reciprocal rank fusion, and weighted fusion of normalised scores); each embedding model and each
weighted hybrid + each reranker (reranking its top --rerank_top_n), and the hybrid + reranker with the
reranker's score fused with the hybrid's. Fusion weights come from the model's metrics.json (the
training scripts choose them on dev), else are chosen on --train_data (by --weight_rule), else 0.5: never
on the test queries. A weight is applied exactly as it was chosen: a hybrid fuses the top 100 passages of
BM25 and of the dense model (or the depth saved with its weight), a fused reranker the top N its weight was
chosen at. Every system is compared with the baseline (--baseline: BM25 when it is evaluated, else the
first embedding model) on --main_metric: paired bootstrap 95% CI and randomisation-test p-value. Each
model encodes the corpus once (cached on disk by model and corpus hash) and the queries in batches; every
metric at every k is read from one ranked list per query.

Metrics: hit, recall, precision, f1, MAP, MRR, nDCG at k (trec_eval's definitions, binary gain),
ID-based context precision/recall; with --judge_* LLM-judged context precision/recall/entities
recall (RAGAS); with a generator, answer metrics (string presence, ROUGE-L, BLEU-4, groundedness,
response relevancy, noise sensitivity).

Data audit first (ragtune.audit): personal information in corpus and test queries (--pii; masked in
every log and report), duplicate passages, and with --train_data the test queries that are near-copies
of training queries; the metrics are then also reported without those leaked queries.

Reports in --output_dir: results.json, results.md, results.png, per_query.csv (answers.csv with a
generator), and systems.json: what rebuilds each system exactly (predict_rag.py --from DIR --system NAME).
Every system is ranked by the RAG pipeline (ragtune.pipeline) that predict_rag.py runs. With --push_to_hub,
the best fine-tuned embedding model / reranker is published with a model card carrying these numbers; a
model whose metrics.json records unredacted personal information in its training data is refused unless
--allow_pii.
"""

from __future__ import annotations

import argparse
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ragtune.audit import AuditResult, add_audit_args, run_audit, write_audit_report
from ragtune.core.cli import add_weight_rule_arg, new_parser
from ragtune.core.data import SAMPLE_CORPUS, SAMPLE_TEST, Corpus, LabelledQuery, load_corpus, load_queries
from ragtune.core.errors import UserError, run_main
from ragtune.core.expansions import QueryExpander, load_expansions
from ragtune.core.io import setup_logging
from ragtune.core.metrics import CONTEXT_METRICS, DEFAULT_KS, RANKING_METRICS
from ragtune.core.model_specs import ModelSpec, assign_labels, is_gguf, resolve_model
from ragtune.core.output_lock import OutputDirLock
from ragtune.core.output_paths import check_args_paths
from ragtune.evaluate.heldout import load_test_queries
from ragtune.evaluate.judge import Judge
from ragtune.evaluate.llm_stages import check_servers, run_llm_stages
from ragtune.evaluate.publishing import base_answer_metrics, publish
from ragtune.evaluate.reports import Report
from ragtune.evaluate.systems import (
    FusionWeights,
    System,
    bm25_spec,
    dense_spec,
    fusion_depth,
    hybrid_specs,
    pipeline_system,
    rerank_spec,
    score_system,
    selection_metric,
)
from ragtune.generation.generators import GeneratorSettings
from ragtune.pipeline import PipelineParts, RAGPipeline
from ragtune.pipeline.names import could_match, expected_names
from ragtune.pipeline.spec import RerankerFusion, best_system, choose_expansions, write_systems
from ragtune.retrieval.embedding_store import EmbeddingModelHandle
from ragtune.train.next_steps import after_evaluation, log_next_commands

logger = logging.getLogger("evaluate_rag")

MAIN_METRIC_NAMES = (*RANKING_METRICS, *CONTEXT_METRICS)


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
    add_data_args(parser)
    add_system_args(parser)
    add_metric_args(parser)
    add_judge_args(parser)
    add_generator_args(parser)
    add_endpoint_args(parser)
    add_output_args(parser)
    add_hub_args(parser)
    return parser


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """Data files: corpus, held-out test queries, training queries; the data audit's flags."""
    data = parser.add_argument_group("data")
    data.add_argument("--corpus", default=str(SAMPLE_CORPUS),
                      help="Passages: CSV/XLSX with columns STT, Văn bản (or id, text), or JSONL with id, text.")
    data.add_argument("--test_data", default=str(SAMPLE_TEST),
                      help="Held-out labelled queries: CSV/XLSX with Query, Ground truth document (e.g. 15 or "
                           "\"15, 37\"), optional Ground truth answer; or query, relevant_ids, answer. Default: the "
                           "sample test split.")
    data.add_argument("--train_data", default=None,
                      help="Labelled training queries (same formats as --test_data), to check the test queries for "
                           "leakage (near-copies): metrics are then also reported without the leaked test queries. "
                           "Also where fusion weights are chosen for models that saved none (never on the test "
                           "queries).")
    data.add_argument("--allow_missing_ids", action="store_true",
                      help="Drop ground-truth ids that are not in the corpus (with a warning) instead of stopping.")
    data.add_argument("--dataset_name", default=None,
                      help="A Hub dataset id for the model cards' `datasets` (e.g. you/neorag-proptit). Default: none "
                           "(a local file's name is not a dataset id).")
    add_audit_args(parser)


def add_system_args(parser: argparse.ArgumentParser) -> None:
    """The systems compared: which models, BM25, hybrids, prompts and sizes."""
    systems = parser.add_argument_group("systems")
    systems.add_argument("--embedding_models", nargs="*", default=["BAAI/bge-m3"], metavar="MODEL",
                         help="Embedding models (Hub ids or local folders). The first is the baseline the others are "
                              "compared with; pass none to evaluate only BM25.")
    systems.add_argument("--reranker_models", nargs="*", default=[], metavar="MODEL",
                         help="Cross-encoder rerankers, each applied to every embedding model's top --rerank_top_n. "
                              "The first is the reranker baseline.")
    systems.add_argument("--rerank_top_n", type=int, default=20,
                         help="Passages of the first stage the reranker reorders (below them the first-stage order "
                              "continues).")
    bm25 = systems.add_mutually_exclusive_group()
    bm25.add_argument("--bm25", dest="bm25", action="store_true", default=True, help="Include the BM25 baseline.")
    bm25.add_argument("--no_bm25", dest="bm25", action="store_false", help="Leave BM25 out.")
    hybrid = systems.add_mutually_exclusive_group()
    hybrid.add_argument("--hybrid", dest="hybrid", action="store_true", default=True,
                        help="Include the hybrid systems: each embedding model fused with BM25 (reciprocal rank "
                             "fusion, and weighted fusion with the weight saved in the model's metrics.json, else "
                             "chosen on --train_data, else 0.5), and each reranker on the weighted hybrid, alone and "
                             "fused with it. BM25 is scored for them even under --no_bm25.")
    hybrid.add_argument("--no_hybrid", dest="hybrid", action="store_false",
                        help="Leave the hybrid systems and the rerankers on top of them out.")
    add_weight_rule_arg(systems, "the --train_data queries, for models that saved none in metrics.json (a saved "
                                 "weight is used as saved)")
    systems.add_argument("--baseline", default=None, metavar="SYSTEM",
                         help="The system every other is compared with (deltas, paired significance): bm25, or a "
                              "system name as in results.md. Default: bm25 when BM25 is evaluated, else the first "
                              "--embedding_models entry.")
    systems.add_argument("--query_prompt", default=None,
                         help="Query prompt (e.g. 'query: ' for E5) for models that saved none; a model that saved "
                              "its prompts (fine_tune_bge_m3.py does) keeps them, as it was trained.")
    systems.add_argument("--passage_prompt", default=None,
                         help="Passage prompt (e.g. 'passage: ') for models that saved none.")
    systems.add_argument("--expansions", default=None, metavar="FILE",
                         help="Query expansion map (CSV: abbreviation, expansion) applied to the queries every first "
                              "stage sees, BM25's included. Default: each system applies the map saved with its "
                              "embedding model (else its reranker), if any; this file overrides a saved map (with a "
                              "warning when they differ).")
    systems.add_argument("--max_seq_length", type=int, default=None,
                         help="Tokens per input for the embedding models (default: each model's own).")
    systems.add_argument("--reranker_max_length", type=int, default=None,
                         help="Tokens per (query, passage) pair for the rerankers (default: each model's own).")
    systems.add_argument("--batch_size", type=int, default=32, help="Encoding and reranking batch size.")
    systems.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu).")
    systems.add_argument("--chunk_size", type=int, default=16384,
                         help="Passages scored at once in top-k search: memory stays bounded however large the "
                              "corpus.")


def add_metric_args(parser: argparse.ArgumentParser) -> None:
    """Cutoffs and the main metric."""
    metrics = parser.add_argument_group("metrics")
    metrics.add_argument("--k", type=int, nargs="+", default=list(DEFAULT_KS), help="Cutoffs for every metric.")
    metrics.add_argument("--main_metric", default=None,
                         help="Metric that picks the model to publish and heads the chart: one of "
                              f"{', '.join(MAIN_METRIC_NAMES)} at a --k cutoff. Default: ndcg@5 (ndcg at the largest "
                              "k when 5 is not among --k).")


def add_judge_args(parser: argparse.ArgumentParser) -> None:
    """The optional LLM judge."""
    judge = parser.add_argument_group("LLM judge (optional; any OpenAI-compatible server: vLLM, Ollama, OpenAI)")
    add_server_args(judge, "judge", "e.g. http://localhost:8000/v1", "Model name the server knows.")
    judge.add_argument("--judge_workers", type=int, default=4, help="Concurrent requests to the judge/generator.")
    judge.add_argument("--judge_max_tokens", type=int, default=512, help="max_tokens of each judge answer.")
    judge.add_argument("--no_entities", dest="entities", action="store_false",
                       help="Skip LLM context entities recall (saves about a third of the judge calls).")
    judge.add_argument("--judge_max_failure_rate", type=float, default=0.5,
                       help="Stop with an error (results kept) when more than this share of judgements stay "
                            "malformed after a retry: the judge model is not following the format.")


def add_generator_args(parser: argparse.ArgumentParser) -> None:
    """The optional answer generator (a server or a local model)."""
    gen = parser.add_argument_group("answer generation (optional)")
    add_server_args(gen, "generator", "OpenAI-compatible server of the generator.",
                    "Generator model name on that server.")
    gen.add_argument("--generator_local", default=None, metavar="PATH",
                     help="A local transformers causal LM folder (or a .gguf file, dequantised) used as the generator "
                          "instead of a server; prompts are fine_tune_generator.py's (ragtune.generation.prompt).")
    gen.add_argument("--generator_adapter", default=None, metavar="PATH",
                     help="A peft LoRA adapter folder loaded on top of --generator_local.")
    gen.add_argument("--generator_max_new_tokens", type=int, default=256, help="Longest generated answer.")
    gen.add_argument("--answer_k", type=int, nargs="+", default=[5],
                     help="Contexts given to the generator (one answer per query, system and value).")
    gen.add_argument("--answer_systems", nargs="+", default=None, metavar="SYSTEM",
                     help="Systems whose contexts the generator answers from: names as in results.md or "
                          "shell-style patterns ('*' for all, '*reranker*'). Default: the baseline and the best "
                          "system by --main_metric.")


def add_server_args(group: Any, role: str, url_help: str, model_help: str) -> None:
    """``--<role>_base_url``, ``--<role>_model`` and ``--<role>_api_key``: the OpenAI-compatible server of a role."""
    group.add_argument(f"--{role}_base_url", default=None, help=url_help)
    group.add_argument(f"--{role}_model", default=None, help=model_help)
    group.add_argument(f"--{role}_api_key", default=None,
                       help="API key (default: $OPENAI_API_KEY, sent only to an api.openai.com URL). Never saved.")


def add_endpoint_args(parser: argparse.ArgumentParser) -> None:
    """Timeouts and retries of the judge and generator servers."""
    net = parser.add_argument_group("endpoints")
    net.add_argument("--endpoint_timeout", type=float, default=120.0, help="Seconds per judge/generator request.")
    net.add_argument("--endpoint_retries", type=int, default=3,
                     help="Retries of a failed request (connection refused, timeout, 429, 5xx), with backoff.")
    net.add_argument("--endpoint_backoff", type=float, default=1.0, help="First backoff in seconds (doubles).")


def add_output_args(parser: argparse.ArgumentParser) -> None:
    """Where reports and caches go."""
    out = parser.add_argument_group("output")
    out.add_argument("--output_dir", default="outputs/eval", help="Where the reports go.")
    out.add_argument("--cache_dir", default=None,
                     help="Embeddings, reranker scores and LLM answers cached across runs. Default: "
                          "<output_dir>/.cache.")


def add_hub_args(parser: argparse.ArgumentParser) -> None:
    """Publishing the selected models to the Hugging Face Hub."""
    hub = parser.add_argument_group("publishing to the Hugging Face Hub")
    hub.add_argument("--push_to_hub", action="store_true",
                     help="Publish the selected models (see --hub_embedding_repo, --hub_reranker_repo, "
                          "--hub_generator_repo).")
    hub.add_argument("--hub_embedding_repo", default=None, metavar="USER/NAME",
                     help="Repo for the best later --embedding_models entry (or the only one).")
    hub.add_argument("--hub_reranker_repo", default=None, metavar="USER/NAME",
                     help="Repo for the best later --reranker_models entry (or the only one), judged on top of the "
                          "best embedding model.")
    hub.add_argument("--hub_generator_repo", default=None, metavar="USER/NAME",
                     help="Repo for the --generator_adapter LoRA adapter; its card compares the test answers with "
                          "the base model's (generated too, on the best answered system's contexts).")
    hub.add_argument("--public", action="store_true", help="Create public repos (default: private).")
    hub.add_argument("--hub_token", default=None,
                     help="Hub token (default: $HF_TOKEN or the `hf auth login` cache). Never printed or saved.")
    hub.add_argument("--dry_run", action="store_true",
                     help="With --push_to_hub: prepare the model cards and show what would be uploaded, upload "
                          "nothing.")
    hub.add_argument("--allow_regression", action="store_true",
                     help="Publish even if the selected model scores below its baseline on --main_metric.")
    hub.add_argument("--allow_pii", action="store_true",
                     help="Publish even if a model's metrics.json records unredacted personal information.")
    hub.add_argument("--language", nargs="+", default=["vi"], metavar="CODE",
                     help="Languages of the published models, for the model card (ISO 639 codes, e.g. vi en).")
    hub.add_argument("--license", default="apache-2.0",
                     help="License of the published models, for the model card (a Hub license id, e.g. apache-2.0, "
                          "mit, cc-by-4.0, other).")


def validate_args(args: argparse.Namespace) -> None:
    """Every flag checked, and cutoffs sorted, before any file is read: a typo fails in a second."""
    check_numbers(args)
    check_models(args)
    choose_main_metric(args)
    check_llm_flags(args)
    check_hub_flags(args)
    check_generator_files(args)
    check_args_paths(args, outputs=("output_dir", "cache_dir", "audit_report"))
    if Path(args.output_dir).exists() and not Path(args.output_dir).is_dir():
        raise UserError(f"--output_dir {args.output_dir} exists and is not a directory")


def check_numbers(args: argparse.Namespace) -> None:
    """Cutoffs, sizes and endpoint settings in range; --k and --answer_k sorted without repeats."""
    bad_k = [k for k in args.k if k <= 0]
    if bad_k:
        raise UserError(f"--k: cutoffs must be positive integers, got {' '.join(map(str, args.k))}")
    args.k = sorted(set(args.k))
    if any(k <= 0 for k in args.answer_k):
        raise UserError(f"--answer_k: values must be positive, got {' '.join(map(str, args.answer_k))}")
    args.answer_k = sorted(set(args.answer_k))
    for flag in ("rerank_top_n", "batch_size", "chunk_size", "judge_workers", "judge_max_tokens",
                 "generator_max_new_tokens"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if args.max_seq_length is not None and args.max_seq_length < 8:
        raise UserError(f"--max_seq_length must be at least 8, got {args.max_seq_length}")
    if args.endpoint_retries < 0 or args.endpoint_timeout <= 0 or args.endpoint_backoff < 0:
        raise UserError("--endpoint_retries and --endpoint_backoff must be >= 0 and --endpoint_timeout > 0")
    if not 0 <= args.judge_max_failure_rate <= 1:
        raise UserError(f"--judge_max_failure_rate must be in [0, 1], got {args.judge_max_failure_rate}")


def check_models(args: argparse.Namespace) -> None:
    """Something to evaluate, rerankers with a first stage, no model listed twice, a baseline that is evaluated."""
    if not args.bm25 and not args.embedding_models:
        raise UserError("nothing to evaluate: --no_bm25 and no --embedding_models")
    if args.baseline == "bm25" and not args.bm25:
        raise UserError("--baseline bm25 compares every system with BM25: drop --no_bm25")
    if args.reranker_models and not args.embedding_models:
        raise UserError("--reranker_models rerank an embedding model's top passages: give --embedding_models too")
    for flag in ("embedding_models", "reranker_models"):
        values = getattr(args, flag)
        duplicates = sorted({v for v in values if values.count(v) > 1})
        if duplicates:
            raise UserError(f"--{flag}: {', '.join(duplicates)} listed twice")


def choose_main_metric(args: argparse.Namespace) -> None:
    """--main_metric checked against the metrics and --k; by default ndcg@5 (ndcg at the largest k without 5)."""
    if args.main_metric is None:
        args.main_metric = "ndcg@5" if 5 in args.k else f"ndcg@{max(args.k)}"
    name, _, k = args.main_metric.partition("@")
    if name not in MAIN_METRIC_NAMES or not k.isdigit() or int(k) not in args.k:
        raise UserError(f"--main_metric must be one of {', '.join(MAIN_METRIC_NAMES)} at a --k cutoff "
                        f"({', '.join(map(str, args.k))}), e.g. ndcg@{args.k[len(args.k) // 2]}; "
                        f"got {args.main_metric!r}")


def check_llm_flags(args: argparse.Namespace) -> None:
    """The judge's and the generator's flags come in the pairs they need."""
    for role in ("judge", "generator"):
        if bool(getattr(args, f"{role}_base_url")) != bool(getattr(args, f"{role}_model")):
            raise UserError(f"--{role}_base_url and --{role}_model go together")
    if args.generator_base_url and args.generator_local:
        raise UserError("give either --generator_base_url/--generator_model or --generator_local, not both")
    if args.generator_adapter and not args.generator_local:
        raise UserError("--generator_adapter is a LoRA for --generator_local; give --generator_local too")


def check_hub_flags(args: argparse.Namespace) -> None:
    """With --push_to_hub, a repo for each kind published and a model to put there; a valid language and license."""
    if args.push_to_hub:
        if not args.hub_embedding_repo and not args.hub_reranker_repo and not args.hub_generator_repo:
            raise UserError("--push_to_hub: say what to publish with --hub_embedding_repo, --hub_reranker_repo "
                            "and/or --hub_generator_repo")
        if args.hub_generator_repo and not (args.generator_local and args.generator_adapter):
            raise UserError("--hub_generator_repo: give the adapter as --generator_adapter on --generator_local")
        if args.hub_embedding_repo and not args.embedding_models:
            raise UserError("--hub_embedding_repo: no --embedding_models to publish")
        if args.hub_reranker_repo and not args.reranker_models:
            raise UserError("--hub_reranker_repo: no --reranker_models to publish")
    elif args.hub_embedding_repo or args.hub_reranker_repo or args.hub_generator_repo or args.dry_run:
        logger.warning("--hub_embedding_repo/--hub_reranker_repo/--hub_generator_repo/--dry_run have no effect "
                       "without --push_to_hub")
    for code in args.language:
        if not re.fullmatch(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*", code):
            raise UserError(f"--language: {code!r} is not a language code (ISO 639, e.g. vi or en); give several "
                            f"separated by spaces")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", args.license):
        raise UserError(f"--license: {args.license!r} is not a Hub license id (e.g. apache-2.0, mit, cc-by-4.0, other)")


def check_generator_files(args: argparse.Namespace) -> None:
    """--generator_local is a model folder or a .gguf file; --generator_adapter a peft adapter folder."""
    local = Path(args.generator_local).expanduser() if args.generator_local else None
    if local is not None and not (is_gguf(local) and local.is_file()) and not (local / "config.json").exists():
        raise UserError(f"--generator_local: {args.generator_local} is not a model folder (no config.json) nor a "
                        f".gguf file")
    if args.generator_adapter and not (Path(args.generator_adapter).expanduser() / "adapter_config.json").exists():
        raise UserError(f"--generator_adapter: {args.generator_adapter} is not a peft adapter folder "
                        f"(no adapter_config.json)")


# ---------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=("sentence_transformers", "transformers"))
    validate_args(args)
    started = time.perf_counter()
    # Data and models are checked (and the data audited) before anything heavy runs or is written.
    data = load_data(args)
    check_servers(args)
    with OutputDirLock(args.output_dir):  # one run per output folder
        return evaluate(args, data, started)


def evaluate(args: argparse.Namespace, data: EvaluationData, started: float) -> int:
    """Retrieval, then generation and judging, reports and publishing: everything that writes --output_dir."""
    output_dir, cache_dir = prepare_folders(args, data.audit)
    logger.info("Data: corpus %s (%d passages), test queries %s (%d, %d relevant pairs); k = %s; cache %s",
                data.corpus.source, len(data.corpus), args.test_data, len(data.queries),
                sum(len(q.relevant_ids) for q in data.queries), args.k, cache_dir)

    systems, handles = retrieve(args, data, cache_dir)
    report = retrieval_report(args, data, systems, output_dir)
    write_systems_file(args, data, systems, output_dir)
    logger.info("Retrieval metrics written to %s (%.1fs)", output_dir, time.perf_counter() - started)

    judge = None
    if args.judge_base_url or args.generator_base_url or args.generator_local:
        judge = run_llm_stages(args, report, handles, cache_dir)
    print_results(report, output_dir)
    check_judge_failures(args, judge, output_dir)
    if args.push_to_hub:
        base_answers = base_answer_metrics(args, report, cache_dir) if args.hub_generator_repo else None
        publish(args, report, base_answers)
    logger.info("Done in %.1fs: %s", time.perf_counter() - started, output_dir / "results.html")
    log_next_commands(after_evaluation(args))
    return 0


@dataclass
class EvaluationData:
    """What is evaluated: the corpus and test queries (redacted copies under --pii redact), the training queries,
    the models named on the command line, and the data audit."""

    corpus: Corpus
    queries: list[LabelledQuery]
    train_queries: list[LabelledQuery]
    embedding_specs: list[ModelSpec]
    reranker_specs: list[ModelSpec]
    audit: AuditResult
    expander: QueryExpander | None = None  # --expansions
    expansion_maps: dict[tuple[str, ...], QueryExpander | None] = field(default_factory=dict)

    def expansions_for(self, *models: Any) -> QueryExpander | None:
        """The query expansion map of a system made of ``models`` (ragtune.pipeline.spec.choose_expansions),
        chosen once per combination (its warnings said once)."""
        key = tuple(model.name for model in models)
        if key not in self.expansion_maps:
            self.expansion_maps[key] = choose_expansions(self.expander, models)
        return self.expansion_maps[key]


def load_data(args: argparse.Namespace) -> EvaluationData:
    """Corpus, test and training queries loaded, models resolved, the data audited; under --pii error this stops
    here, before anything is written."""
    corpus = load_corpus(args.corpus)
    queries = load_test_queries(args.test_data, corpus, args.allow_missing_ids)
    # Training queries serve the leakage check and the choice of fusion weights (for models that saved none):
    # loaded against a copy, so that FlagEmbedding passages they carry are not added to the corpus evaluated.
    train_queries = []
    if args.train_data:
        train_queries = load_queries(args.train_data, Corpus(list(corpus.ids), list(corpus.texts), corpus.source))
    embedding_specs = [resolve_model(name, "--embedding_models") for name in args.embedding_models]
    reranker_specs = [resolve_model(name, "--reranker_models") for name in args.reranker_models]
    assign_labels(embedding_specs)
    assign_labels(reranker_specs)
    check_system_names(args, embedding_specs, reranker_specs)
    expander = load_expansions(args.expansions) if args.expansions else None
    audit = run_audit(corpus, train_queries, queries, policy=args.pii,
                      sources={"corpus": str(args.corpus), "train": str(args.train_data), "test": str(args.test_data)})
    return EvaluationData(audit.corpus, audit.test, audit.train, embedding_specs, reranker_specs, audit, expander)


def check_system_names(args: argparse.Namespace, embedding_specs: Sequence[ModelSpec],
                       reranker_specs: Sequence[ModelSpec]) -> None:
    """--baseline and --answer_systems name systems this run will evaluate: checked before anything heavy runs,
    against the names the models give (ragtune.pipeline.names; weights not chosen yet), and exactly once the
    systems are known."""
    expected = expected_names(args.bm25, args.hybrid and bool(embedding_specs), [s.label for s in embedding_specs],
                              [s.label for s in reranker_specs])
    if args.baseline is not None and not could_match(args.baseline, expected):
        raise UserError(f"--baseline {args.baseline!r} is not a system of this run; the systems (names as in "
                        f"results.md): {', '.join(expected)}")
    for pattern in args.answer_systems or ():
        if not could_match(pattern, expected):
            raise UserError(f"--answer_systems {pattern!r} matches no system of this run; the systems (names as in "
                            f"results.md, or shell-style patterns such as '*' or '*reranker*'): "
                            f"{', '.join(expected)}")
    if args.answer_systems and not (args.generator_base_url or args.generator_local):
        logger.warning("--answer_systems has no effect without a generator (--generator_local or "
                       "--generator_base_url)")


def prepare_folders(args: argparse.Namespace, audit: AuditResult) -> tuple[Path, Path]:
    """The run's first writes (the output folder is locked): the cache folder (default: <output_dir>/.cache) and
    the audit report."""
    output_dir = Path(args.output_dir)
    write_audit_report(audit, args.audit_report)
    cache_dir = Path(args.cache_dir) if args.cache_dir else output_dir / ".cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    return output_dir, cache_dir


def retrieve(args: argparse.Namespace, data: EvaluationData,
             cache_dir: Path) -> tuple[list[System], list[EmbeddingModelHandle]]:
    """Every system's ranked lists, deep enough for every k, the reranker and the answers; and the embedding
    handles (the first one stays loaded when answers are generated: it embeds questions for response relevancy).

    Each system is a RAG pipeline (ragtune.pipeline, what predict_rag.py runs); they share one PipelineParts, so
    BM25 and each dense model run once for all of them. With hybrids, every list is retrieved as deep as every
    fusion needs (its depth, not the reports'): the metrics at --k read the top of the same lists.
    """
    depth = max(max(args.k), args.rerank_top_n if data.reranker_specs else 0, max(args.answer_k))
    hybrid = args.hybrid and bool(data.embedding_specs)
    if hybrid:
        depth = max(depth, fusion_depth(data.embedding_specs, data.reranker_specs, args.rerank_top_n))
    parts = PipelineParts(data.corpus, cache_dir, args.device, args.batch_size, args.chunk_size)
    weights = FusionWeights(parts, data.train_queries, depth, args.rerank_top_n, selection_metric(args.main_metric),
                            rule=args.weight_rule)
    systems = []
    if args.bm25:
        bm25 = pipeline_system(RAGPipeline(bm25_spec(data.expander), parts), data.queries, depth)
        logger.info("BM25: done in %.1fs", bm25.info["seconds"])
        systems.append(bm25)
    elif hybrid:
        logger.info("--no_bm25: BM25 is left out of the reports but still scored for the hybrid systems "
                    "(--no_hybrid leaves them out too)")
    dense, hybrids, handles = embedding_systems(args, data, parts, weights, depth, hybrid)
    systems += dense + hybrids
    weighted = [s for s in hybrids if s.info["fusion"] == "weighted"]
    for spec in data.reranker_specs:
        systems += reranked_systems(args, data, parts, spec, dense, weighted, weights, depth)
    return systems, handles


def embedding_systems(args: argparse.Namespace, data: EvaluationData, parts: PipelineParts, weights: FusionWeights,
                      depth: int, hybrid: bool) -> tuple[list[System], list[System], list[EmbeddingModelHandle]]:
    """Each embedding model's dense system and, with ``hybrid``, its two hybrids with BM25; and the model handles."""
    dense, hybrids, handles = [], [], []
    for spec in data.embedding_specs:
        model = parts.add_encoder(spec, args.max_seq_length, args.query_prompt, args.passage_prompt)
        system_spec = dense_spec(model, data.expansions_for(model))
        system = pipeline_system(RAGPipeline(system_spec, parts), data.queries, depth)
        dense.append(system)
        handles.append(parts.encoder(model))
        logger.info("%s: done in %.1fs (passage embeddings %s)", spec.label, system.info["seconds"],
                    "from the cache" if system.info["passage_embeddings_cached"] else "encoded")
        if hybrid:
            for hybrid_spec in hybrid_specs(system_spec, weights.dense_fusion(system_spec)):
                hybrids.append(pipeline_system(RAGPipeline(hybrid_spec, parts), data.queries, depth))
        if len(handles) > 1 or not (args.generator_base_url or args.generator_local):
            handles[-1].release()  # only the first model is kept: it embeds questions for response relevancy
    return dense, hybrids, handles


def reranked_systems(args: argparse.Namespace, data: EvaluationData, parts: PipelineParts, spec: ModelSpec,
                     dense: list[System], weighted: list[System], weights: FusionWeights, depth: int) -> list[System]:
    """One reranker on every dense system, and on every weighted hybrid alone and fused with the hybrid's score.

    The fused system reranks and fuses the top N its weight was chosen at (the reranker's saved depth), which
    may differ from --rerank_top_n.
    """
    reranker = parts.add_reranker(spec, args.reranker_max_length)

    def ranked(first: System, fused: RerankerFusion | None = None) -> System:
        expander = data.expansions_for(first.spec.embedding, reranker)
        system_spec = rerank_spec(first.spec, reranker, args.rerank_top_n, expander, fused=fused)
        return pipeline_system(RAGPipeline(system_spec, parts), data.queries, depth)

    systems = [ranked(first) for first in dense]
    for i, first in enumerate(weighted):
        systems.append(ranked(first))
        chosen = weights.reranker_fusion(reranker, first.spec, data.expansions_for(first.spec.embedding, reranker))
        if i == 0:
            tell_reranker_fusion(spec, chosen, args.rerank_top_n)
        systems.append(ranked(first, chosen))
    scorer = parts.reranker(reranker)
    logger.info("Reranker %s: %d pairs scored, the rest from the cache", spec.label, scorer.computed)
    scorer.release()
    return systems


def tell_reranker_fusion(spec: ModelSpec, chosen: RerankerFusion, rerank_top_n: int) -> None:
    """One line when a reranker's saved fusion is applied otherwise than the flags say: at its own depth, or to a
    weighted hybrid although its weight was chosen against another first stage."""
    if chosen.depth != rerank_top_n:
        logger.info("%s: its fusion weight was chosen on its top %d (saved in its metrics.json), so the fused reranker "
                    "reranks and fuses the top %d, not --rerank_top_n %d", spec.label, chosen.depth, chosen.depth,
                    rerank_top_n)
    if chosen.against not in (None, "hybrid"):
        logger.warning("%s: its fusion weight was chosen against a %s first stage (fine_tune_reranker.py "
                       "--first_stage %s); here it fuses with a weighted hybrid, so the fused numbers are not those "
                       "it was chosen for", spec.label, chosen.against, chosen.against)


def retrieval_report(args: argparse.Namespace, data: EvaluationData, systems: list[System],
                     output_dir: Path) -> Report:
    """Every metric of every system, against the baseline (:func:`baseline_system`), written as the first version
    of the reports."""
    for system in systems:
        score_system(system, data.corpus, data.queries, args.k)
    baseline = baseline_system(args, systems)
    report = Report(args, data.corpus, data.queries, systems, data.embedding_specs, data.reranker_specs, baseline,
                    output_dir)
    report.data_audit = data.audit.summary()
    report.leaked = sorted(data.audit.leaked_test_indices)
    report.write()
    return report


def baseline_system(args: argparse.Namespace, systems: Sequence[System]) -> str:
    """The name of the system every other is compared with: --baseline; by default BM25 when it is evaluated, else
    the first embedding model (else the first system)."""
    names = [s.name for s in systems]
    if args.baseline is not None:
        if args.baseline not in names:
            raise UserError(f"--baseline {args.baseline!r} is not among the systems evaluated: {', '.join(names)}")
        return args.baseline
    for kind in ("bm25", "dense"):
        found = next((s.name for s in systems if s.kind == kind), None)
        if found is not None:
            return found
    return names[0]


def write_systems_file(args: argparse.Namespace, data: EvaluationData, systems: Sequence[System],
                       output_dir: Path) -> None:
    """systems.json: what rebuilds each system exactly, and which is best by --main_metric (predict_rag.py --from)."""
    generator = GeneratorSettings.from_flags(args)
    corpus = {"path": str(Path(args.corpus).resolve()), "passages": len(data.corpus),
              "fingerprint": data.corpus.fingerprint(), "pii": args.pii}
    best = best_system([s.name for s in systems], [s.metrics.get(args.main_metric) for s in systems])
    write_systems(output_dir, [s.spec for s in systems], corpus, args.main_metric, best,
                  generator.record() if generator else None,
                  {"batch_size": args.batch_size, "chunk_size": args.chunk_size, "k": args.k,
                   "answer_k": args.answer_k})


def print_results(report: Report, output_dir: Path) -> None:
    """The final table on stdout, and the main metric without the leaked test queries."""
    print(f"\n{len(report.queries)} test queries, metrics at k={report.main_k} (all k in "
          f"{output_dir / 'results.md'}):\n")
    print(report.console_table() + "\n")
    if report.leaked:
        print(report.leak_line() + "\n")


def check_judge_failures(args: argparse.Namespace, judge: Judge | None, output_dir: Path) -> None:
    """Stop (the results kept) when too many judgements stayed malformed: the judge is not following the format."""
    if judge is not None and judge.asked and judge.failure_rate() > args.judge_max_failure_rate:
        example = judge.failures[0].response if judge.failures else ""
        raise UserError(f"--judge_model {args.judge_model}: {len(judge.failures)} of {judge.asked} judgements were "
                        f"still malformed after a retry (e.g. {example[:80]!r}); metrics from the rest are in "
                        f"{output_dir / 'results.json'}; use a model that follows JSON instructions")


if __name__ == "__main__":
    run_main(main)

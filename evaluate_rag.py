#!/usr/bin/env python
"""Benchmark base vs fine-tuned retrievers and rerankers on held-out queries, and publish the winners.

    python evaluate_rag.py --corpus data/CLB_PROPTIT.csv --test_data data/test.xlsx \
        --embedding_models BAAI/bge-m3 outputs/bge-m3-finetuned \
        --reranker_models BAAI/bge-reranker-v2-m3 outputs/bge-reranker-v2-m3-finetuned --k 3 5 7

Systems, side by side: BM25; each embedding model; each embedding model + each reranker (reranking
its top --rerank_top_n). Each model encodes the corpus once (cached on disk by model and corpus
hash) and the queries in batches; every metric at every k is read from one ranked list per query.

Metrics: hit, recall, precision, f1, MAP, MRR, nDCG at k (trec_eval's definitions, binary gain),
ID-based context precision/recall; with --judge_* LLM-judged context precision/recall/entities
recall (RAGAS); with a generator, answer metrics (string presence, ROUGE-L, BLEU-4, groundedness,
response relevancy, noise sensitivity).

Reports in --output_dir: results.json, results.md, results.png, per_query.csv (answers.csv with a
generator). With --push_to_hub, the best fine-tuned embedding model / reranker is published with a
model card carrying these numbers.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

from ragtune.cli import HelpFormatter, Parser
from ragtune.data import SAMPLE_CORPUS, SAMPLE_TEST, load_corpus, load_queries
from ragtune.errors import UserError, run_main
from ragtune.judge import openai_key_for
from ragtune.metrics import DEFAULT_KS, RANKING_METRICS

logger = logging.getLogger("evaluate_rag")

SECRET_FLAGS = ("hub_token", "judge_api_key", "generator_api_key")
MAIN_METRIC_NAMES = (*RANKING_METRICS, "context_precision", "context_recall")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(description=__doc__, formatter_class=HelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--corpus", default=str(SAMPLE_CORPUS),
                      help="Passages: CSV/XLSX with columns STT, Văn bản (or id, text), or JSONL with id, text.")
    data.add_argument("--test_data", default=str(SAMPLE_TEST),
                      help="Held-out labelled queries: CSV/XLSX with Query, Ground truth document (e.g. 15 or "
                           "\"15, 37\"), optional Ground truth answer; or query, relevant_ids, answer. Default: the "
                           "sample test split.")
    data.add_argument("--allow_missing_ids", action="store_true",
                      help="Drop ground-truth ids that are not in the corpus (with a warning) instead of stopping.")
    data.add_argument("--dataset_name", default=None,
                      help="Dataset name for model cards. Default: the corpus file name.")

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
    systems.add_argument("--query_prompt", default=None,
                         help="Query prompt (e.g. 'query: ' for E5) for models that saved none; a model that saved "
                              "its prompts (fine_tune_bge_m3.py does) keeps them, as it was trained.")
    systems.add_argument("--passage_prompt", default=None,
                         help="Passage prompt (e.g. 'passage: ') for models that saved none.")
    systems.add_argument("--max_seq_length", type=int, default=None,
                         help="Tokens per input for the embedding models (default: each model's own).")
    systems.add_argument("--reranker_max_length", type=int, default=None,
                         help="Tokens per (query, passage) pair for the rerankers (default: each model's own).")
    systems.add_argument("--batch_size", type=int, default=32, help="Encoding and reranking batch size.")
    systems.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu).")
    systems.add_argument("--chunk_size", type=int, default=16384,
                         help="Passages scored at once in top-k search: memory stays bounded however large the "
                              "corpus.")

    metrics = parser.add_argument_group("metrics")
    metrics.add_argument("--k", type=int, nargs="+", default=list(DEFAULT_KS), help="Cutoffs for every metric.")
    metrics.add_argument("--main_metric", default=None,
                         help="Metric that picks the model to publish and heads the chart: one of "
                              f"{', '.join(MAIN_METRIC_NAMES)} at a --k cutoff. Default: ndcg@5 (ndcg at the largest "
                              "k when 5 is not among --k).")

    judge = parser.add_argument_group("LLM judge (optional; any OpenAI-compatible server: vLLM, Ollama, OpenAI)")
    judge.add_argument("--judge_base_url", default=None, help="e.g. http://localhost:8000/v1")
    judge.add_argument("--judge_model", default=None, help="Model name the server knows.")
    judge.add_argument("--judge_api_key", default=None, help="API key (default: $OPENAI_API_KEY). Never saved.")
    judge.add_argument("--judge_workers", type=int, default=4, help="Concurrent requests to the judge/generator.")
    judge.add_argument("--judge_max_tokens", type=int, default=512, help="max_tokens of each judge answer.")
    judge.add_argument("--no_entities", dest="entities", action="store_false",
                       help="Skip LLM context entities recall (saves about a third of the judge calls).")
    judge.add_argument("--judge_max_failure_rate", type=float, default=0.5,
                       help="Stop with an error (results kept) when more than this share of judgements stay "
                            "malformed after a retry: the judge model is not following the format.")

    gen = parser.add_argument_group("answer generation (optional)")
    gen.add_argument("--generator_base_url", default=None, help="OpenAI-compatible server of the generator.")
    gen.add_argument("--generator_model", default=None, help="Generator model name on that server.")
    gen.add_argument("--generator_api_key", default=None, help="API key (default: $OPENAI_API_KEY, sent only to an api.openai.com URL). Never saved.")
    gen.add_argument("--generator_local", default=None, metavar="PATH",
                     help="A local transformers causal LM folder used as the generator instead of a server.")
    gen.add_argument("--generator_adapter", default=None, metavar="PATH",
                     help="A peft LoRA adapter folder loaded on top of --generator_local.")
    gen.add_argument("--generator_max_new_tokens", type=int, default=256, help="Longest generated answer.")
    gen.add_argument("--answer_k", type=int, nargs="+", default=[5],
                     help="Contexts given to the generator (one answer per query, system and value).")
    gen.add_argument("--answer_systems", nargs="+", default=None, metavar="SYSTEM",
                     help="Systems whose contexts are used for answers (names as in results.md). Default: all.")

    net = parser.add_argument_group("endpoints")
    net.add_argument("--endpoint_timeout", type=float, default=120.0, help="Seconds per judge/generator request.")
    net.add_argument("--endpoint_retries", type=int, default=3,
                     help="Retries of a failed request (connection refused, timeout, 429, 5xx), with backoff.")
    net.add_argument("--endpoint_backoff", type=float, default=1.0, help="First backoff in seconds (doubles).")

    out = parser.add_argument_group("output")
    out.add_argument("--output_dir", default="outputs/eval", help="Where the reports go.")
    out.add_argument("--cache_dir", default=None,
                     help="Embeddings, reranker scores and LLM answers cached across runs. Default: "
                          "<output_dir>/.cache.")

    hub = parser.add_argument_group("publishing to the Hugging Face Hub")
    hub.add_argument("--push_to_hub", action="store_true",
                     help="Publish the selected models (see --hub_embedding_repo / --hub_reranker_repo).")
    hub.add_argument("--hub_embedding_repo", default=None, metavar="USER/NAME",
                     help="Repo for the best later --embedding_models entry (or the only one).")
    hub.add_argument("--hub_reranker_repo", default=None, metavar="USER/NAME",
                     help="Repo for the best later --reranker_models entry (or the only one), judged on top of the "
                          "best embedding model.")
    hub.add_argument("--public", action="store_true", help="Create public repos (default: private).")
    hub.add_argument("--hub_token", default=None,
                     help="Hub token (default: $HF_TOKEN or the `hf auth login` cache). Never printed or saved.")
    hub.add_argument("--dry_run", action="store_true",
                     help="With --push_to_hub: prepare the model cards and show what would be uploaded, upload "
                          "nothing.")
    hub.add_argument("--allow_regression", action="store_true",
                     help="Publish even if the selected model scores below its baseline on --main_metric.")
    return parser


def setup_logging() -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO)
    logging.getLogger().setLevel(logging.INFO)
    for noisy in ("httpx", "httpcore", "urllib3", "filelock", "huggingface_hub", "sentence_transformers",
                  "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def redacted_config(args: argparse.Namespace) -> dict[str, Any]:
    """Flag values for results.json: secrets are never written, only whether one was given."""
    config = {}
    for key, value in vars(args).items():
        if key in SECRET_FLAGS or "token" in key or "api_key" in key:
            config[key] = "<redacted>" if value else None
        else:
            config[key] = value
    return config


def validate_args(args: argparse.Namespace) -> None:
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
    if not args.bm25 and not args.embedding_models:
        raise UserError("nothing to evaluate: --no_bm25 and no --embedding_models")
    if args.reranker_models and not args.embedding_models:
        raise UserError("--reranker_models rerank an embedding model's top passages: give --embedding_models too")
    for flag in ("embedding_models", "reranker_models"):
        values = getattr(args, flag)
        duplicates = sorted({v for v in values if values.count(v) > 1})
        if duplicates:
            raise UserError(f"--{flag}: {', '.join(duplicates)} listed twice")
    if args.main_metric is None:
        args.main_metric = "ndcg@5" if 5 in args.k else f"ndcg@{max(args.k)}"
    name, _, k = args.main_metric.partition("@")
    if name not in MAIN_METRIC_NAMES or not k.isdigit() or int(k) not in args.k:
        raise UserError(f"--main_metric must be one of {', '.join(MAIN_METRIC_NAMES)} at a --k cutoff "
                        f"({', '.join(map(str, args.k))}), e.g. ndcg@{args.k[len(args.k) // 2]}; "
                        f"got {args.main_metric!r}")
    if bool(args.judge_base_url) != bool(args.judge_model):
        raise UserError("--judge_base_url and --judge_model go together")
    if bool(args.generator_base_url) != bool(args.generator_model):
        raise UserError("--generator_base_url and --generator_model go together")
    if args.generator_base_url and args.generator_local:
        raise UserError("give either --generator_base_url/--generator_model or --generator_local, not both")
    if args.generator_adapter and not args.generator_local:
        raise UserError("--generator_adapter is a LoRA for --generator_local; give --generator_local too")
    if args.push_to_hub:
        if not args.hub_embedding_repo and not args.hub_reranker_repo:
            raise UserError("--push_to_hub: say what to publish with --hub_embedding_repo and/or --hub_reranker_repo")
        if args.hub_embedding_repo and not args.embedding_models:
            raise UserError("--hub_embedding_repo: no --embedding_models to publish")
        if args.hub_reranker_repo and not args.reranker_models:
            raise UserError("--hub_reranker_repo: no --reranker_models to publish")
    elif args.hub_embedding_repo or args.hub_reranker_repo or args.dry_run:
        logger.warning("--hub_embedding_repo/--hub_reranker_repo/--dry_run have no effect without --push_to_hub")


def import_hub():
    try:
        from ragtune import hub
    except ImportError as err:
        raise UserError(f"--push_to_hub: publishing is not available in this installation ({err})") from err
    return hub


# ---------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    validate_args(args)
    started = time.perf_counter()

    # Data and models are checked before anything heavy runs or is written.
    corpus = load_corpus(args.corpus)
    from ragtune.evaluation import missing_test_ids, resolve_model, assign_labels

    missing = missing_test_ids(args.test_data, corpus)
    if missing and not args.allow_missing_ids:
        rows = sorted({r for rs in missing.values() for r in rs})
        shown = ", ".join(sorted(missing)[:10]) + (" ..." if len(missing) > 10 else "")
        raise UserError(f"--test_data: {len(missing)} ground-truth id(s) not in the corpus {corpus.source}: {shown} "
                        f"(rows {', '.join(map(str, rows[:10]))}{' ...' if len(rows) > 10 else ''}); fix the ids or "
                        f"the corpus, or pass --allow_missing_ids to drop them")
    queries = load_queries(args.test_data, corpus, flag="--test_data")
    embedding_specs = [resolve_model(name, "--embedding_models") for name in args.embedding_models]
    reranker_specs = [resolve_model(name, "--reranker_models") for name in args.reranker_models]
    assign_labels(embedding_specs)
    assign_labels(reranker_specs)
    hub = import_hub() if args.push_to_hub else None
    if args.generator_local:
        path = Path(args.generator_local).expanduser()
        if not (path / "config.json").exists():
            raise UserError(f"--generator_local: {path} is not a model folder (no config.json)")
    if args.generator_adapter and not (Path(args.generator_adapter).expanduser() / "adapter_config.json").exists():
        raise UserError(f"--generator_adapter: {args.generator_adapter} is not a peft adapter folder "
                        f"(no adapter_config.json)")

    output_dir = Path(args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"--output_dir {output_dir} exists and is not a directory")
    output_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(args.cache_dir) if args.cache_dir else output_dir / ".cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    logger.info("Data: corpus %s (%d passages), test queries %s (%d, %d relevant pairs); k = %s; cache %s",
                corpus.source, len(corpus), args.test_data, len(queries),
                sum(len(q.relevant_ids) for q in queries), args.k, cache_dir)

    from ragtune.evaluation import (EmbeddingModelHandle, EmbeddingRun, RerankScores, bm25_system, dense_system,
                                    rerank_systems, saved_prompts, score_system, tie_ranks)

    depth = max(max(args.k), args.rerank_top_n if reranker_specs else 0, max(args.answer_k))
    tie_rank = tie_ranks(corpus.ids)
    fingerprint = corpus.fingerprint()
    systems = []
    if args.bm25:
        systems.append(bm25_system(corpus, queries, depth, tie_rank, args.chunk_size))
        logger.info("BM25: done in %.1fs", systems[-1].info["seconds"])

    handles: list[EmbeddingModelHandle] = []
    for spec in embedding_specs:
        handle = EmbeddingModelHandle(EmbeddingRun(spec, "", "", args.max_seq_length, args.batch_size), args.device)
        if spec.path is None:
            handle.model()  # a Hub model not cached yet: download it to know its prompts and hash
        query_prompt, passage_prompt = saved_prompts(spec.path)
        handle.run.query_prompt = query_prompt or (args.query_prompt or "")
        handle.run.passage_prompt = passage_prompt or (args.passage_prompt or "")
        for flag, saved, given in (("--query_prompt", query_prompt, args.query_prompt),
                                   ("--passage_prompt", passage_prompt, args.passage_prompt)):
            if saved and given is not None and given != saved:
                logger.warning("%s: %s keeps the prompt it saved (%r), not %r", flag, spec.label, saved, given)
        system = dense_system(handle, corpus, queries, depth, tie_rank, cache_dir, args.chunk_size, fingerprint)
        systems.append(system)
        handles.append(handle)
        if len(handles) > 1 or not (args.generator_base_url or args.generator_local):
            handle.release()
        logger.info("%s: done in %.1fs (passage embeddings %s)", spec.label, system.info["seconds"],
                    "from the cache" if system.info["passage_embeddings_cached"] else "encoded")
    dense = [s for s in systems if s.kind == "dense"]
    for spec in reranker_specs:
        scorer = RerankScores(spec, args.reranker_max_length, cache_dir)
        systems += rerank_systems(dense, scorer, corpus, queries, args.rerank_top_n, args.device, args.batch_size)
        logger.info("Reranker %s: %d pairs scored, the rest from the cache", spec.label, scorer.computed)

    for system in systems:
        score_system(system, corpus, queries, args.k)
    baseline = dense[0].name if dense else systems[0].name
    state = Report(args, corpus, queries, systems, embedding_specs, reranker_specs, baseline, output_dir, depth)
    state.write()
    logger.info("Retrieval metrics written to %s (%.1fs)", output_dir, time.perf_counter() - started)

    judge = None
    if args.judge_base_url or args.generator_base_url or args.generator_local:
        judge = run_llm_stages(args, state, handles, cache_dir)

    print(f"\n{len(queries)} test queries, metrics at k={args.main_metric.split('@')[1]} "
          f"(all k in {output_dir / 'results.md'}):\n")
    from ragtune.reports import console_table

    print(console_table(state.payload()["systems"], int(args.main_metric.split("@")[1])) + "\n")

    if judge is not None and judge.asked and judge.failure_rate() > args.judge_max_failure_rate:
        example = judge.failures[0].response if judge.failures else ""
        raise UserError(f"--judge_model {args.judge_model}: {len(judge.failures)} of {judge.asked} judgements were "
                        f"still malformed after a retry (e.g. {example[:80]!r}); metrics from the rest are in "
                        f"{output_dir / 'results.json'}; use a model that follows JSON instructions")
    if args.push_to_hub:
        publish(args, hub, state)
    logger.info("Done in %.1fs: %s", time.perf_counter() - started, output_dir / "results.md")
    return 0


class Report:
    """Everything the reports need; ``write`` rewrites every file from the current state."""

    def __init__(self, args, corpus, queries, systems, embedding_specs, reranker_specs, baseline, output_dir, depth):
        self.args = args
        self.corpus = corpus
        self.queries = queries
        self.systems = systems
        self.embedding_specs = embedding_specs
        self.reranker_specs = reranker_specs
        self.baseline = baseline
        self.output_dir = output_dir
        self.depth = depth
        self.judge_summary: dict[str, Any] | None = None
        self.generator_summary: dict[str, Any] | None = None
        self.answer_records: list[dict[str, Any]] = []
        self.published: list[dict[str, Any]] | None = None

    def payload(self) -> dict[str, Any]:
        import hashlib

        from ragtune import __version__
        from ragtune.reports import METRIC_ORDER, split_key

        order = {name: i for i, name in enumerate(METRIC_ORDER)}

        def sort_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
            return dict(sorted(metrics.items(), key=lambda kv: (order.get(split_key(kv[0])[0], 99),
                                                                split_key(kv[0])[0], split_key(kv[0])[1] or 0)))

        test_sha = hashlib.sha256(Path(self.args.test_data).read_bytes()).hexdigest()[:16]
        config = redacted_config(self.args)
        config.update({
            "ragtune_version": __version__,
            "corpus": {"path": str(self.args.corpus), "passages": len(self.corpus),
                       "fingerprint": self.corpus.fingerprint()},
            "test_data": {"path": str(self.args.test_data), "queries": len(self.queries), "sha256": test_sha},
            "baseline_system": self.baseline,
            "models": {"embedding": [s.describe() for s in self.embedding_specs],
                       "reranker": [s.describe() for s in self.reranker_specs]},
            "definitions": {
                "context_precision@k": "sum_{i<=k} precision@i * rel_i / sum_{i<=k} rel_i (RAGAS formula, labels "
                                       "as verdicts; 0 if no relevant passage in the top k)",
                "context_recall@k": "|relevant ∩ top k| / |relevant| (ID-based, equals recall@k)",
                "ties": "first stage: score desc, then passage id desc (trec_eval); reranked: first-stage order",
            },
        })
        systems = []
        for s in self.systems:
            systems.append({"name": s.name, "kind": s.kind, "embedding_model": s.embedding_model,
                            "reranker_model": s.reranker_model, "metrics": sort_metrics(s.metrics),
                            "excluded": dict(sorted(s.excluded.items())), "info": s.info})
        payload: dict[str, Any] = {"config": config, "systems": systems}
        if self.judge_summary:
            payload["judge"] = self.judge_summary
        if self.generator_summary:
            payload["generator"] = self.generator_summary
        if self.published is not None:
            payload["published"] = self.published
        return payload

    def write(self) -> None:
        from ragtune.reports import (plot_chart, results_markdown, write_answers_csv, write_json, write_per_query_csv,
                                     write_text)

        payload = self.payload()
        write_json(self.output_dir / "results.json", payload)
        write_text(self.output_dir / "results.md", results_markdown(payload, self.baseline))
        write_per_query_csv(self.output_dir / "per_query.csv", self.queries, self.systems, self.corpus,
                            max(self.args.k))
        plot_chart(self.output_dir / "results.png", payload["systems"], int(self.args.main_metric.split("@")[1]))
        if self.answer_records:
            write_answers_csv(self.output_dir / "answers.csv", self.answer_records)


def run_llm_stages(args, state: Report, handles, cache_dir: Path):
    """LLM-judged context metrics, then generated answers and their metrics; results saved after each stage."""
    from ragtune.evaluation import add_per_query_metrics
    from ragtune.judge import CachedLLM, Judge, LLMCache, OpenAIChatClient

    cache = LLMCache(cache_dir / "llm_cache.jsonl")
    retry = dict(timeout=args.endpoint_timeout, retries=args.endpoint_retries, backoff=args.endpoint_backoff)
    judge = None
    queries, corpus, systems = state.queries, state.corpus, state.systems
    try:
        if args.judge_base_url:
            client = OpenAIChatClient(args.judge_base_url, args.judge_model,
                                      args.judge_api_key or openai_key_for(args.judge_base_url), flag="--judge_base_url",
                                      **retry)
            judge = Judge(CachedLLM(client, cache, args.judge_max_tokens), workers=args.judge_workers)
            top = max(args.k)
            needed: dict[int, set[int]] = {}
            for system in systems:
                for qi in range(len(queries)):
                    needed.setdefault(qi, set()).update(system.ranked[qi][:top])
            logger.info("Judging %d (query, passage) pairs with %s at %s (once each, shared by every system and k)",
                        sum(map(len, needed.values())), args.judge_model, client.url)
            judged = judge.judge_contexts(queries, needed, corpus, entities=args.entities)
            for system in systems:
                add_per_query_metrics(system, judge.context_scores(judged, system.ranked, args.k, args.entities))
            state.judge_summary = judge.summary()
            state.write()
            logger.info("LLM context metrics: %d judgements, %d requests, %d from the cache, %d malformed",
                        judge.asked, judge.llm.requests, judge.llm.cache_hits, len(judge.failures))
        if args.generator_base_url or args.generator_local:
            generate_answers(args, state, handles, cache, judge, retry)
    except UserError as err:
        state.write()
        raise UserError(f"{err} (results computed so far are saved in {state.output_dir}; cached answers are "
                        f"reused when you run again)") from err
    return judge


def generate_answers(args, state: Report, handles, cache, judge, retry) -> None:
    from ragtune.answers import EndpointGenerator, LocalGenerator, evaluate_answers
    from ragtune.judge import CachedLLM, Judge, OpenAIChatClient

    names = [s.name for s in state.systems]
    if args.answer_systems:
        unknown = [n for n in args.answer_systems if n not in names]
        if unknown:
            raise UserError(f"--answer_systems: unknown system(s) {', '.join(unknown)}; systems are: "
                            f"{', '.join(names)}")
        chosen = [s for s in state.systems if s.name in args.answer_systems]
    else:
        chosen = list(state.systems)
    if args.generator_local:
        generator = LocalGenerator(args.generator_local, args.generator_adapter, cache, args.generator_max_new_tokens,
                                   device=args.device)
    else:
        client = OpenAIChatClient(args.generator_base_url, args.generator_model,
                                  args.generator_api_key or openai_key_for(args.generator_base_url),
                                  flag="--generator_base_url", **retry)
        llm = CachedLLM(client, cache, args.generator_max_new_tokens)
        generator = EndpointGenerator(llm, Judge(llm, workers=args.judge_workers))
    embed = None
    if judge is not None and handles:
        embed = handles[0].encode_queries
    elif judge is not None:
        logger.warning("response relevancy needs an embedding model (--embedding_models): skipped")
    records = evaluate_answers(chosen, state.queries, state.corpus, args.answer_k, generator, judge, embed)
    state.answer_records = records
    llm = getattr(generator, "llm", None)
    state.generator_summary = {"model": generator.model_id, "answers": len(records),
                               "systems": [s.name for s in chosen], "answer_k": args.answer_k,
                               "requests": llm.requests if llm else generator.requests,
                               "cache_hits": llm.cache_hits if llm else len(records) - generator.requests}
    if judge is not None:
        state.judge_summary = judge.summary()
    state.write()


# ---------------------------------------------------------------------------- publishing


def publish(args, hub, state: Report) -> None:
    """Publish the selected models; a regression on the main metric refuses every push (nothing half-done)."""
    import json

    from ragtune.evaluation import ranking_metric_keys, select_for_publishing
    from ragtune.reports import card_markdown

    selections = select_for_publishing(state.systems, args.embedding_models, args.reranker_models, args.main_metric)
    wanted = [(kind, repo) for kind, repo in (("embedding", args.hub_embedding_repo),
                                              ("reranker", args.hub_reranker_repo)) if repo]
    problems, requests = [], []
    keys = ranking_metric_keys(args.k)
    payload_systems = {s["name"]: s for s in state.payload()["systems"]}
    for kind, repo in wanted:
        selection = selections.get(kind)
        if selection is None:
            problems.append(f"no {kind} system was evaluated to publish to {repo}")
            continue
        model_dir = Path(selection.model).expanduser()
        if not model_dir.is_dir():
            problems.append(f"--hub_{kind}_repo: the selected {kind} model '{selection.model}' is not a local folder "
                            f"(only a model you trained can be published)")
            continue
        base_value = selection.baseline.metrics.get(args.main_metric) if selection.baseline else None
        value = selection.system.metrics.get(args.main_metric)
        if selection.regression and not args.allow_regression:
            problems.append(f"{kind} model '{selection.model}' scores {args.main_metric} {value:.4f} below its "
                            f"baseline '{selection.baseline.name}' ({base_value:.4f}); pass --allow_regression to "
                            f"publish it anyway")
            continue
        if selection.below_baseline:
            logger.warning("Publishing %s although it scores below %s on %s (%.4f < %.4f)%s", selection.model,
                           selection.baseline.name, args.main_metric, value, base_value,
                           " (--allow_regression)" if selection.regression else "")
        training_config = None
        metrics_file = model_dir / "metrics.json"
        if metrics_file.is_file():
            try:
                training_config = json.loads(metrics_file.read_text()).get("config")
            except (OSError, ValueError):
                training_config = None
        shown = [payload_systems[s.name] for s in (selection.baseline, selection.system) if s is not None]
        requests.append(hub.PublishRequest(
            model_dir=model_dir, repo_id=repo, kind=kind,
            base_model=_base_model_name(selection, model_dir),
            metrics=_floats(selection.system.metrics),
            baseline_metrics=_floats(selection.baseline.metrics) if selection.baseline else {},
            dataset_name=args.dataset_name or Path(args.corpus).stem,
            results_markdown=card_markdown(shown, selection.baseline.name if selection.baseline else None, keys),
            training_config=training_config))
    if problems:
        raise UserError("not publishing anything: " + "; ".join(problems) + f" (results are in {state.output_dir})")
    logger.info("Publishing %s%s", ", ".join(f"{r.kind} {r.model_dir} -> {r.repo_id}" for r in requests),
                " (dry run)" if args.dry_run else "")
    token = args.hub_token or os.environ.get("HF_TOKEN") or None
    state.published = hub.publish_models(requests, token=token, private=not args.public, dry_run=args.dry_run)
    state.write()


def _base_model_name(selection, model_dir: Path) -> str:
    """The model this one was fine-tuned from: its metrics.json says so; else the baseline entry."""
    import json

    try:
        base = json.loads((model_dir / "metrics.json").read_text()).get("base_model")
        if base:
            return str(base)
    except (OSError, ValueError):
        pass
    if selection.baseline is not None:
        if selection.kind == "reranker" and selection.baseline.reranker_model:
            return selection.baseline.reranker_model
        if selection.kind == "embedding" and selection.baseline.embedding_model:
            return selection.baseline.embedding_model
    return selection.model


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


if __name__ == "__main__":
    run_main(main)

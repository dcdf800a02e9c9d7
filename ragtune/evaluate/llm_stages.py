"""evaluate_rag.py's optional LLM stages: judged context metrics, then generated answers and their metrics.

Each stage adds its numbers to the :class:`~ragtune.evaluate.reports.Report` and rewrites the reports, so a
server that fails half-way loses nothing computed before it (and the disk cache keeps every answer
received, for the next run).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

from ragtune.core.errors import UserError
from ragtune.evaluate.answers import evaluate_answers
from ragtune.evaluate.judge import Judge
from ragtune.evaluate.reports import Report
from ragtune.evaluate.systems import System, add_per_query_metrics
from ragtune.generation.generators import (
    CHECK_TOKENS,
    EndpointOptions,
    GeneratorSettings,
    answer_messages,
    build_generator,
)
from ragtune.generation.llm_cache import CachedLLM, LLMCache
from ragtune.generation.llm_client import OpenAIChatClient, openai_key_for
from ragtune.pipeline.names import matching
from ragtune.pipeline.spec import best_system
from ragtune.retrieval.embedding_store import EmbeddingModelHandle

logger = logging.getLogger(__name__)


def run_llm_stages(args: argparse.Namespace, report: Report, handles: Sequence[EmbeddingModelHandle],
                   cache_dir: Path) -> Judge | None:
    """LLM-judged context metrics, then generated answers and their metrics; the reports are saved after each."""
    cache = LLMCache(cache_dir / "llm_cache.jsonl")
    judge = None
    try:
        if args.judge_base_url:
            client = server_client(args, "judge")
            judge = Judge(CachedLLM(client, cache, args.judge_max_tokens), workers=args.judge_workers)
            judge_contexts(args, report, judge, client.url)
        if args.generator_base_url or args.generator_local:
            generate_answers(args, report, handles, cache, judge)
    except UserError as err:
        report.write()
        raise UserError(f"{err} (results computed so far are saved in {report.output_dir}; cached answers are "
                        f"reused when you run again)") from err
    return judge


def answer_systems(args: argparse.Namespace, report: Report) -> list[System]:
    """The systems the generator answers from: --answer_systems (names or shell-style patterns, checked against
    the expected names before retrieval), by default the baseline and the best system by --main_metric (a
    generator answers every query once per system and --answer_k: answering every system would multiply the
    cost by the number of systems, ten and more with rerankers)."""
    names = [s.name for s in report.systems]
    if args.answer_systems:
        chosen, unmatched = matching(args.answer_systems, names)
        if unmatched:  # a weight typed in a pattern that the run chose otherwise
            raise UserError(f"--answer_systems: {', '.join(map(repr, unmatched))} matches no system; the systems "
                            f"are: {', '.join(names)}")
    else:
        best = best_system(names, [s.metrics.get(args.main_metric) for s in report.systems])
        chosen = [report.baseline, *([best] if best not in (None, report.baseline) else [])]
    return [s for s in report.systems if s.name in chosen]


def check_servers(args: argparse.Namespace) -> None:
    """One short request (not cached) to the judge's and the generator's servers, made before retrieval starts: a
    server that is down, a model name it does not know or a wrong key fails in seconds with nothing written, not
    after the retrieval (a rerun whose answers are all cached needs its servers up too)."""
    for role in ("judge", "generator"):
        if getattr(args, f"{role}_base_url"):
            logger.info("Checking the %s server %s", role, getattr(args, f"{role}_base_url"))
            server_client(args, role).complete(answer_messages("OK?", []), max_tokens=CHECK_TOKENS)


def server_client(args: argparse.Namespace, role: str) -> OpenAIChatClient:
    """The chat client of the ``--<role>_base_url`` server (role "judge" or "generator"), with its model, key and
    the --endpoint_* timeout and retries."""
    base_url = getattr(args, f"{role}_base_url")
    return OpenAIChatClient(base_url, getattr(args, f"{role}_model"),
                            getattr(args, f"{role}_api_key") or openai_key_for(base_url), flag=f"--{role}_base_url",
                            timeout=args.endpoint_timeout, retries=args.endpoint_retries,
                            backoff=args.endpoint_backoff)


def judge_contexts(args: argparse.Namespace, report: Report, judge: Judge, url: str) -> None:
    """LLM context precision/recall/entities recall of every system at every k."""
    queries, corpus, systems = report.queries, report.corpus, report.systems
    top = max(args.k)
    needed: dict[int, set[int]] = {}
    for system in systems:
        for qi in range(len(queries)):
            needed.setdefault(qi, set()).update(system.ranked[qi][:top])
    logger.info("Judging %d (query, passage) pairs with %s at %s (once each, shared by every system and k)",
                sum(map(len, needed.values())), args.judge_model, url)
    judged = judge.judge_contexts(queries, needed, corpus, entities=args.entities)
    for system in systems:
        add_per_query_metrics(system, judge.context_scores(judged, system.ranked, args.k, args.entities))
    report.judge_summary = judge.summary()
    report.write()
    logger.info("LLM context metrics: %d judgements, %d requests, %d from the cache, %d malformed",
                judge.asked, judge.llm.requests, judge.llm.cache_hits, len(judge.failures))


def generate_answers(args: argparse.Namespace, report: Report, handles: Sequence[EmbeddingModelHandle],
                     cache: LLMCache, judge: Judge | None) -> None:
    """An answer per (system, --answer_k, query) from the system's contexts, with its metrics."""
    chosen = answer_systems(args, report)
    # Built as the RAG pipeline builds it (predict_rag.py), from the settings systems.json records.
    generator = build_generator(GeneratorSettings.from_flags(args), cache, args.device,
                                EndpointOptions.from_flags(args, workers=args.judge_workers))
    embed = None
    if judge is not None and handles:
        embed = handles[0].encode_queries
    elif judge is not None:
        logger.warning("response relevancy needs an embedding model (--embedding_models): skipped")
    records = evaluate_answers(chosen, report.queries, report.corpus, args.answer_k, generator, judge, embed)
    report.answer_records = records
    llm = getattr(generator, "llm", None)
    report.generator_summary = {"model": generator.model_id, "answers": len(records),
                                "systems": [s.name for s in chosen], "answer_k": args.answer_k,
                                "requests": llm.requests if llm else generator.requests,
                                "cache_hits": llm.cache_hits if llm else len(records) - generator.requests}
    if judge is not None:
        report.judge_summary = judge.summary()
    report.write()

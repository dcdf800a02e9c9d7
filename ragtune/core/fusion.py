"""Fusing rankers: BM25 + dense (a hybrid first stage) and first stage + reranker.

On small domain corpora, lexical matching (BM25) and a small fine-tuned embedding model fail on
different queries, so combining them beats either alone; likewise a reranker trained on a few
dozen queries is safer with the first stage's score mixed in. Two standard ways, both here:

* **Reciprocal rank fusion** (Cormack, Clarke & Büttcher, SIGIR 2009): score = Σ 1 / (k + rank),
  k = 60. Needs no weight and ignores score scales.
* **Weighted fusion of normalised scores**: each run's scores are min-max normalised per query
  over its own candidates (best 1, worst 0; a candidate a run did not return counts as 0), then
  ``weight * a + (1 - weight) * b``. Uses score gaps that RRF throws away, but needs ``weight``,
  which :func:`choose_weight` picks on training or dev queries, never on the queries it is
  reported on.

A run is one query's scores as ``{passage_id: score}`` (higher is better); a list of runs holds
one per query. Fused rankings order ties the way trec_eval does (:func:`ragtune.core.ranking.rank_by_score`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from ragtune.core.metrics import query_metrics, split_metric_key
from ragtune.core.model_specs import saved_metrics
from ragtune.core.ranking import rank_by_score

Run = Mapping[str, float]

RRF_K = 60
# Weights tried by choose_weight: steps of 0.1 are as fine as 20-100 queries can tell apart.
WEIGHT_GRID = tuple(round(0.1 * i, 1) for i in range(11))
DEFAULT_METRIC = "ndcg@5"


def run_from_arrays(ids: Sequence[str], indices: Iterable[int], scores: Iterable[float]) -> dict[str, float]:
    """One query's run from a top-k row (corpus indices and their scores)."""
    return {ids[int(i)]: float(s) for i, s in zip(indices, scores)}


def runs_from_top_k(ids: Sequence[str], indices: np.ndarray, scores: np.ndarray) -> list[dict[str, float]]:
    """Runs of every query from top-k arrays (queries x k), e.g. :func:`ragtune.core.ranking.bm25_top_k`'s."""
    return [run_from_arrays(ids, row_idx, row_scores) for row_idx, row_scores in zip(indices, scores)]


def minmax_normalize(run: Run) -> dict[str, float]:
    """Scores mapped to [0, 1] over this query's candidates; all equal -> all 1 (no evidence either way)."""
    if not run:
        return {}
    values = np.fromiter(run.values(), dtype=np.float64, count=len(run))
    low, high = values.min(), values.max()
    if high - low <= 1e-12 * max(1.0, abs(high)):
        return {pid: 1.0 for pid in run}
    return {pid: float((score - low) / (high - low)) for pid, score in run.items()}


def weighted_fusion(a: Run, b: Run, weight: float) -> dict[str, float]:
    """``weight`` x normalised ``a`` + (1 - ``weight``) x normalised ``b``, over the union of candidates.

    ``weight`` 1 keeps ``a``'s ranking (and appends ``b``'s other candidates), 0 keeps ``b``'s.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"fusion weight must be in [0, 1], got {weight}")
    na, nb = minmax_normalize(a), minmax_normalize(b)
    return {pid: weight * na.get(pid, 0.0) + (1.0 - weight) * nb.get(pid, 0.0) for pid in {**na, **nb}}


def reciprocal_rank_fusion(runs: Sequence[Run], k: int = RRF_K) -> dict[str, float]:
    """Σ over runs of 1 / (k + rank), rank 1-based within each run (ties in trec_eval order)."""
    fused: dict[str, float] = {}
    for run in runs:
        for rank, pid in enumerate(ranking(run), start=1):
            fused[pid] = fused.get(pid, 0.0) + 1.0 / (k + rank)
    return fused


def ranking(run: Run) -> list[str]:
    """Passage ids, best first."""
    ids = list(run)
    return rank_by_score(ids, [run[pid] for pid in ids])


def fuse_all(runs_a: Sequence[Run], runs_b: Sequence[Run], weight: float | None) -> list[dict[str, float]]:
    """Per query, weighted fusion with ``weight``, or RRF when ``weight`` is None."""
    if len(runs_a) != len(runs_b):
        raise ValueError(f"{len(runs_a)} runs to fuse with {len(runs_b)}")
    if weight is None:
        return [reciprocal_rank_fusion([a, b]) for a, b in zip(runs_a, runs_b)]
    return [weighted_fusion(a, b, weight) for a, b in zip(runs_a, runs_b)]


def choose_weight(runs_a: Sequence[Run], runs_b: Sequence[Run], relevant: Sequence[Iterable[str]],
                  metric: str = DEFAULT_METRIC,
                  grid: Sequence[float] = WEIGHT_GRID) -> tuple[float, dict[float, float]]:
    """The weight of ``a`` in :func:`weighted_fusion` with the best mean ``metric`` on these queries.

    Pass training or dev queries only: a weight chosen on the test queries makes the test numbers
    optimistic. Returns the weight and the mean metric of every weight tried. Ties go to the weight
    nearest 0.5: with no evidence for either run, the even mix is the safer bet on unseen queries.
    """
    relevant = [list(r) for r in relevant]
    if not (len(runs_a) == len(runs_b) == len(relevant)) or not relevant:
        raise ValueError(f"choose_weight needs one run of each kind and one relevant set per query, got "
                         f"{len(runs_a)}, {len(runs_b)}, {len(relevant)}")
    name, k = split_metric_key(metric)
    scores = {}
    for weight in grid:
        fused = fuse_all(runs_a, runs_b, float(weight))
        scores[float(weight)] = float(np.mean([query_metrics(ranking(run), rel, (k,), (name,))[metric]
                                               for run, rel in zip(fused, relevant)]))
    best = max(scores.values())
    # Exact ties only would miss equal means that differ in the last float bit.
    tied = [w for w, s in scores.items() if s >= best - 1e-12]
    return min(tied, key=lambda w: (abs(w - 0.5), w)), scores


def fuse_top_k(ids: Sequence[str], a: tuple[Sequence[Sequence[int]], Sequence[Sequence[float]]],
               b: tuple[Sequence[Sequence[int]], Sequence[Sequence[float]]], weight: float | None,
               depth: int) -> tuple[list[list[int]], list[list[float]]]:
    """Fuse two systems given as (corpus indices, scores) per query; the fused top ``depth``, same form.

    ``weight`` is ``a``'s (None: RRF). Pass only finite scores (e.g. a reranker's top-n head).
    """
    index_of = {pid: i for i, pid in enumerate(ids)}
    ranked, scores = [], []
    for run in fuse_all(runs_from_top_k(ids, *a), runs_from_top_k(ids, *b), weight):
        top = ranking(run)[:depth]
        ranked.append([index_of[pid] for pid in top])
        scores.append([run[pid] for pid in top])
    return ranked, scores


FUSION_KEY = "fusion"


def saved_weight(model_dir: str | Path, key: str) -> float | None:
    """The fusion weight a training script chose on dev and saved in ``metrics.json`` (``{"fusion": {key: w}}``).

    None when the folder has no such file or weight (a Hub model, an older run): the caller then
    chooses one on training queries, never on the test set.
    """
    weights = saved_metrics(model_dir).get(FUSION_KEY)
    value = weights.get(key) if isinstance(weights, dict) else None
    return float(value) if isinstance(value, (int, float)) and 0.0 <= value <= 1.0 else None

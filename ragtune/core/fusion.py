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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ragtune.core.metrics import query_metrics, split_metric_key
from ragtune.core.model_specs import saved_metrics
from ragtune.core.ranking import rank_by_score

Run = Mapping[str, float]

RRF_K = 60
# Weights tried by choose_weight: steps of 0.1 are as fine as 20-100 queries can tell apart.
WEIGHT_GRID = tuple(round(0.1 * i, 1) for i in range(11))
DEFAULT_METRIC = "ndcg@5"
# How a fusion weight is picked from the grid (pick_weight). smoothed had the best cross-validated worst case
# of the fused reranker and the only hybrid that beat BM25 on average (README, benchmarks/bench_pipeline.py).
WEIGHT_RULES = ("smoothed", "one_se", "max")
DEFAULT_WEIGHT_RULE = "smoothed"


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


@dataclass(frozen=True)
class WeightChoice:
    """A fusion weight chosen on some queries, with what a reader needs to trust it.

    ``weight`` is the first run's (the dense model against BM25; the reranker against its first stage).
    ``value`` and ``standard_error`` are the mean ``metric`` at that weight on the queries it was chosen
    on and its standard error; ``reference`` is the second run alone (weight 0: BM25, or the first stage);
    ``best_weight``/``best_value`` the grid's maximum, which ``rule`` may have passed over; ``curve`` every
    weight tried. All measured on the queries the weight was chosen on, so optimistic for the chosen one.
    """

    weight: float
    rule: str
    metric: str
    value: float
    standard_error: float
    reference: float
    best_weight: float
    best_value: float
    queries: int
    curve: dict[float, float] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """What metrics.json keeps of the choice (with the weight itself stored by the caller)."""
        return {"rule": self.rule, "metric": self.metric, "chosen_value": round(self.value, 6),
                "standard_error": round(self.standard_error, 6), "reference_value": round(self.reference, 6),
                "best_weight": self.best_weight, "best_value": round(self.best_value, 6),
                "chosen_on_queries": self.queries}


def weight_curve(runs_a: Sequence[Run], runs_b: Sequence[Run], relevant: Sequence[Iterable[str]],
                 metric: str = DEFAULT_METRIC, grid: Sequence[float] = WEIGHT_GRID) -> dict[float, np.ndarray]:
    """Per weight of the grid, the per-query ``metric`` of ``weighted_fusion(a, b, weight)`` (one value per query)."""
    relevant = [list(r) for r in relevant]
    if not (len(runs_a) == len(runs_b) == len(relevant)) or not relevant:
        raise ValueError(f"a fusion weight needs one run of each kind and one relevant set per query, got "
                         f"{len(runs_a)}, {len(runs_b)}, {len(relevant)}")
    name, k = split_metric_key(metric)
    if k is None:
        raise ValueError(f"metric {metric!r} has no @k cutoff")
    return {float(w): np.array([query_metrics(ranking(run), rel, (k,), (name,))[metric]
                                for run, rel in zip(fuse_all(runs_a, runs_b, float(w)), relevant)])
            for w in grid}


def pick_weight(per_query: dict[float, np.ndarray], rule: str = DEFAULT_WEIGHT_RULE) -> float:
    """The weight ``rule`` picks from per-query metric values (see :data:`WEIGHT_RULES`).

    * ``smoothed`` (the default): the maximum of the mean averaged with its grid neighbours, so a plateau
      beats a spike beside a cliff.
    * ``one_se``: the one-standard-error rule (Breiman et al., CART; ESL 7.10): among the weights whose
      mean is within one standard error of the best (the standard error of the paired per-query
      difference from the best), the smallest, i.e. the smallest move away from the second run (BM25, or
      the first stage). On 20 dev queries the maximum is often a lucky peak beside a cliff; the smallest
      weight that is not measurably worse sits on the plateau that leads up to it. Safe, but with a weak dense
      model it rarely leaves BM25 (weight 0 in 4 of 5 folds of the cross-validated benchmark).
    * ``max``: the plain maximum (what 20 queries over-fit).

    Ties go to the weight nearest 0.5: with no evidence either way the even mix is the safer bet.
    """
    weights = sorted(per_query)
    means = {w: float(per_query[w].mean()) for w in weights}
    if rule == "smoothed":
        score = {w: float(np.mean([means[v] for v in weights[max(0, i - 1):i + 2]])) for i, w in enumerate(weights)}
    else:
        score = means
    top = max(score.values())
    # Exact ties only would miss equal means that differ in the last float bit.
    best = min((w for w in weights if score[w] >= top - 1e-12), key=lambda w: (abs(w - 0.5), w))
    if rule in ("max", "smoothed"):
        return best
    if rule != "one_se":
        raise ValueError(f"unknown weight rule {rule!r}; one of {', '.join(WEIGHT_RULES)}")
    return min(w for w in weights if means[best] - means[w] <= paired_standard_error(per_query[best], per_query[w]))


def paired_standard_error(a: np.ndarray, b: np.ndarray) -> float:
    """Standard error of the mean per-query difference ``a - b`` (0 for fewer than two queries)."""
    if len(a) < 2:
        return 0.0
    return float(np.std(a - b, ddof=1) / np.sqrt(len(a)))


def choose_weight(runs_a: Sequence[Run], runs_b: Sequence[Run], relevant: Sequence[Iterable[str]],
                  metric: str = DEFAULT_METRIC, grid: Sequence[float] = WEIGHT_GRID,
                  rule: str = DEFAULT_WEIGHT_RULE) -> WeightChoice:
    """The weight of ``a`` in :func:`weighted_fusion` that ``rule`` picks on these queries (:func:`pick_weight`).

    Pass training or dev queries only: a weight chosen on the test queries makes the test numbers
    optimistic. The runs are fused as given: pass each run's candidates at the depth the fusion will be
    applied at (:class:`ragtune.retrieval.first_stage.HybridFusion` does), or the weight means something else.
    """
    per_query = weight_curve(runs_a, runs_b, relevant, metric, grid)
    weight = pick_weight(per_query, rule)
    best = pick_weight(per_query, "max")
    values = per_query[weight]
    se = float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
    reference = per_query.get(0.0)
    return WeightChoice(weight=weight, rule=rule, metric=metric, value=float(values.mean()), standard_error=se,
                        reference=float(reference.mean()) if reference is not None else float("nan"),
                        best_weight=best, best_value=float(per_query[best].mean()), queries=len(values),
                        curve={w: float(v.mean()) for w, v in per_query.items()})


def fuse_top_k(ids: Sequence[str], a: tuple[Sequence[Sequence[int]], Sequence[Sequence[float]]],
               b: tuple[Sequence[Sequence[int]], Sequence[Sequence[float]]], weight: float | None,
               depth: int) -> tuple[list[list[int]], list[list[float]]]:
    """Fuse two systems given as (corpus indices, scores) per query; the fused top ``depth``, same form.

    ``weight`` is ``a``'s (None: RRF). Pass only finite scores (e.g. a reranker's top-n head).
    """
    return top_of_runs(ids, fuse_all(runs_from_top_k(ids, *a), runs_from_top_k(ids, *b), weight), depth)


def top_of_runs(ids: Sequence[str], runs: Sequence[Run], depth: int) -> tuple[list[list[int]], list[list[float]]]:
    """Per run, its top ``depth`` corpus indices and their scores, best first (ties as trec_eval orders them)."""
    index_of = {pid: i for i, pid in enumerate(ids)}
    ranked, scores = [], []
    for run in runs:
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

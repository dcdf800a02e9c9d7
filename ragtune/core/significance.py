"""Is system A really better than system B on these queries? Paired tests on per-query scores.

Users pick between systems on 20-100 queries, where a difference of 0.1 in a mean metric can be
noise. Both tests here are paired (each query is scored by both systems) and make no normality
assumption:

* :func:`paired_bootstrap_ci`: resample queries with replacement; the 2.5th and 97.5th percentiles
  of the resampled mean differences are the 95% confidence interval of the mean difference.
* :func:`bootstrap_ci`: the same resampling of one system's scores: the 95% interval of its mean.
* :func:`holm_adjust`: Holm's step-down correction of several systems' p-values against one baseline.
* :func:`randomization_test`: under "no difference", each query's two scores are exchangeable, so
  the sign of each per-query difference is a coin flip; the p-value is the share of sign flips whose
  mean difference is at least as far from 0 as the observed one (two-sided), with the +1 correction
  so that p is never 0 (Smucker, Allan & Carterette, CIKM 2007, recommend this test for IR).

Why our own ~40 lines rather than ``scipy.stats.bootstrap`` / ``permutation_test``: scipy's default
BCa interval is undefined (NaN, with a warning) when every difference is equal, which is exactly the
"identical systems" case a report meets, and we want one seeded, vectorised code path whose
numbers do not change with scipy's defaults. The tests check the p-value against scipy's.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

DEFAULT_RESAMPLES = 10_000
# Below this many queries a bootstrap interval is rough (with one query it has zero width and means nothing).
FEW_QUERIES = 10
# Resamples drawn per block: bounds memory at block x queries floats however many queries there are.
_BLOCK = 1_000


def _differences(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores need two 1-D arrays of the same length, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("no queries to compare")
    return a - b


def _percentile_bootstrap(values: np.ndarray, confidence: float, n_resamples: int,
                          seed: int) -> tuple[float, float, float]:
    """(mean, CI low, CI high) of ``values``: resample them with replacement, take the percentiles of the means."""
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, n_resamples, _BLOCK):
        rows = min(_BLOCK, n_resamples - start)
        picks = rng.integers(0, values.size, size=(rows, values.size))
        means.append(values[picks].mean(axis=1))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(np.concatenate(means), [alpha, 1 - alpha])
    return float(values.mean()), float(low), float(high)


def paired_bootstrap_ci(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                        confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES,
                        seed: int = 0) -> tuple[float, float, float]:
    """(mean difference a - b, CI low, CI high): percentile bootstrap over queries."""
    return _percentile_bootstrap(_differences(a, b), confidence, n_resamples, seed)


def bootstrap_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95,
                 n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> tuple[float, float, float]:
    """(mean, CI low, CI high) of one system's per-query scores: percentile bootstrap over queries.

    How far a mean metric could move with other queries of the same kind: what a report draws as an error bar.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"a bootstrap interval needs a non-empty 1-D array of scores, got shape {values.shape}")
    return _percentile_bootstrap(values, confidence, n_resamples, seed)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given: comparing many systems with one baseline, the
    smallest of m raw p-values is multiplied by m, the next by m - 1, ... (kept monotone, capped at 1), so that
    "p < 0.05" keeps its meaning for the family of comparisons (Holm, Scand. J. Statist. 1979)."""
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for position, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - position) * p_values[index]))
        adjusted[index] = running
    return adjusted


def randomization_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                       n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> float:
    """Two-sided p-value of the paired randomisation (sign-flip) test on the mean difference."""
    diff = _differences(a, b)
    observed = abs(diff.mean())
    # A float tolerance: flips that reproduce the observed |mean| up to rounding count as "as extreme".
    tolerance = 1e-12 * max(1.0, observed)
    rng = np.random.default_rng(seed)
    extreme = 0
    for start in range(0, n_resamples, _BLOCK):
        rows = min(_BLOCK, n_resamples - start)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(rows, diff.size))
        extreme += int(np.count_nonzero(np.abs((signs * diff).mean(axis=1)) >= observed - tolerance))
    return (extreme + 1) / (n_resamples + 1)


def compare(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, confidence: float = 0.95,
            n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, alpha: float = 0.05) -> dict[str, float | int | bool]:
    """Everything a report shows for "a vs b" on one metric (per-query scores in the same query order).

    ``significant`` is p < ``alpha``; the CI and the p-value nearly always agree (the CI excludes 0
    exactly when p is small), but they are different tests, so both are reported.
    """
    mean_difference, low, high = paired_bootstrap_ci(a, b, confidence, n_resamples, seed)
    p_value = randomization_test(a, b, n_resamples, seed)
    queries = int(np.asarray(a).size)
    return {"mean_difference": mean_difference, "ci_low": low, "ci_high": high, "confidence": confidence,
            "p_value": p_value, "significant": bool(p_value < alpha), "queries": queries,
            "resamples": n_resamples, "caveat": few_queries_caveat(queries)}


def few_queries_caveat(queries: int) -> str | None:
    """What a reader must know about an interval from too few queries (None when there are enough)."""
    if queries <= 1:
        return "one query: the interval has zero width and the p-value is 1 by construction; they say nothing"
    if queries < FEW_QUERIES:
        return f"only {queries} queries: the interval and p-value are rough"
    return None


class MeansWithQueries(dict):
    """Mean metrics (``{"ndcg@5": 0.71, ...}``) that keep the per-query values they average, so that a model card or
    report can put a confidence interval beside each mean. Everywhere else (JSON, comparisons, ``dict(...)``) it is
    the plain dict of means it always was: the per-query values travel with it only as far as the object does."""

    def __init__(self, per_query: Sequence[Mapping[str, float | None]]) -> None:
        rows = [dict(row) for row in per_query]
        keys = list(dict.fromkeys(key for row in rows for key in row))
        super().__init__({key: float(np.mean(values)) for key in keys
                          if (values := [row[key] for row in rows if row.get(key) is not None])})
        self.per_query = rows

    def interval(self, key: str, confidence: float = 0.95, seed: int = 0) -> tuple[float, float] | None:
        """The percentile-bootstrap interval of ``key``'s mean over the queries (:func:`bootstrap_ci`); None when no
        query has a value."""
        values = [row[key] for row in self.per_query if row.get(key) is not None]
        if not values:
            return None
        _, low, high = bootstrap_ci(values, confidence, seed=seed)
        return low, high

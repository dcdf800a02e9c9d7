"""Paired significance: a planted large difference is significant, identical systems are not, the CI covers the truth."""

from __future__ import annotations

import numpy as np
import pytest

from ragtune.core.significance import compare, paired_bootstrap_ci, randomization_test


def planted(n: int = 30, difference: float = 0.3, noise: float = 0.2, seed: int = 1):
    rng = np.random.default_rng(seed)
    b = rng.uniform(0, 1, n)
    return b + difference + rng.normal(0, noise, n), b


def test_planted_large_difference_is_significant_and_covered():
    a, b = planted()
    result = compare(a, b)
    assert result["p_value"] < 0.05 and result["significant"]
    assert result["ci_low"] <= 0.3 <= result["ci_high"]
    assert result["ci_low"] > 0  # the interval excludes "no difference"
    assert result["mean_difference"] == pytest.approx(float(np.mean(a - b)))
    assert result["queries"] == 30


def test_identical_systems_are_not_significant():
    a = np.random.default_rng(0).uniform(0, 1, 25)
    result = compare(a, a.copy())
    assert result["p_value"] > 0.05 and not result["significant"]
    assert result["p_value"] == 1.0
    assert result["ci_low"] == result["ci_high"] == result["mean_difference"] == 0.0


def test_small_noisy_difference_is_not_significant():
    a, b = planted(n=20, difference=0.01, noise=0.3, seed=3)
    assert randomization_test(a, b) > 0.05
    low, high = paired_bootstrap_ci(a, b)[1:]
    assert low < 0 < high


def test_p_value_agrees_with_scipy_permutation_test():
    from scipy.stats import permutation_test

    for seed, difference in ((5, 0.05), (6, 0.1), (7, 0.0)):
        a, b = planted(n=20, difference=difference, noise=0.25, seed=seed)
        ours = randomization_test(a, b, n_resamples=20_000)
        theirs = permutation_test((a, b), lambda x, y, axis: np.mean(x - y, axis=axis), vectorized=True,
                                  permutation_type="samples", n_resamples=20_000, random_state=0).pvalue
        assert ours == pytest.approx(theirs, abs=0.015)


def test_confidence_interval_covers_the_true_difference_about_95_percent_of_the_time():
    covered = 0
    trials = 200
    for seed in range(trials):
        a, b = planted(n=30, difference=0.1, noise=0.3, seed=100 + seed)
        _, low, high = paired_bootstrap_ci(a, b, n_resamples=2000, seed=seed)
        covered += low <= 0.1 <= high
    assert 0.88 <= covered / trials <= 0.99


def test_seeded_and_validated():
    a, b = planted()
    assert compare(a, b, seed=3) == compare(a, b, seed=3)
    with pytest.raises(ValueError):
        compare(a, b[:-1])
    with pytest.raises(ValueError):
        compare([], [])


def test_too_few_queries_come_with_a_caveat():
    """One test query: a zero-width interval and p = 1 that say nothing; the report must say so."""
    one = compare([1.0], [0.0])
    assert one["ci_low"] == one["ci_high"] and "one query" in one["caveat"]
    assert "only 5 queries" in compare([1, 0, 1, 1, 0], [0, 0, 1, 0, 0])["caveat"]
    assert compare(np.ones(12), np.zeros(12))["caveat"] is None

"""One system's bootstrap interval and Holm's correction: what results.html draws and prints."""

from __future__ import annotations

import numpy as np
import pytest

from ragtune.core.significance import bootstrap_ci, holm_adjust, paired_bootstrap_ci


def test_bootstrap_interval_covers_the_mean_and_narrows_with_more_queries():
    rng = np.random.default_rng(0)
    few, many = rng.uniform(0, 1, 20), rng.uniform(0, 1, 500)
    mean, low, high = bootstrap_ci(few)
    assert mean == pytest.approx(float(few.mean())) and low < mean < high
    _, low_many, high_many = bootstrap_ci(many)
    assert high_many - low_many < high - low
    # About 1.96 standard errors each side for a mean of 500 uniform draws.
    se = many.std(ddof=1) / np.sqrt(many.size)
    assert high_many - low_many == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_bootstrap_interval_of_constant_scores_has_zero_width_and_is_seeded():
    assert bootstrap_ci([0.5] * 7) == (0.5, 0.5, 0.5)
    values = np.random.default_rng(1).uniform(0, 1, 30)
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    # The same draws as the paired interval of (values - 0).
    assert bootstrap_ci(values, seed=3) == pytest.approx(paired_bootstrap_ci(values, np.zeros(30), seed=3))
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_holm_adjustment_by_hand():
    # m = 4: sorted 0.01, 0.02, 0.03, 0.5 -> 0.04, 0.06, 0.06 (monotone), 0.5; capped at 1.
    assert holm_adjust([0.03, 0.01, 0.5, 0.02]) == pytest.approx([0.06, 0.04, 0.5, 0.06])
    assert holm_adjust([0.4, 0.6]) == pytest.approx([0.8, 0.8])
    assert holm_adjust([0.02]) == [0.02]
    assert holm_adjust([]) == []


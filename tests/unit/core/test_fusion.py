"""Fusion of rankings: hand-made score lists give the expected order; weights come from training queries only."""

from __future__ import annotations

import pytest

from ragtune.core.fusion import (
    choose_weight,
    fuse_all,
    minmax_normalize,
    ranking,
    reciprocal_rank_fusion,
    runs_from_top_k,
    weighted_fusion,
)


def test_weighted_fusion_of_hand_made_scores():
    bm25 = {"d1": 10.0, "d2": 5.0, "d3": 0.0}
    dense = {"d3": 1.0, "d2": 0.9, "d4": 0.0}
    fused = weighted_fusion(bm25, dense, 0.5)
    # normalised bm25: d1 1, d2 .5, d3 0; dense: d3 1, d2 .9, d4 0; missing counts 0.
    assert fused == pytest.approx({"d1": 0.5, "d2": 0.7, "d3": 0.5, "d4": 0.0})
    assert ranking(fused) == ["d2", "d3", "d1", "d4"]  # the d1/d3 tie in trec_eval order (id descending)
    assert ranking(weighted_fusion(bm25, dense, 1.0))[:2] == ["d1", "d2"]  # bm25's order
    assert ranking(weighted_fusion(bm25, dense, 0.0))[:2] == ["d3", "d2"]  # dense's order
    assert ranking(weighted_fusion(bm25, dense, 0.8)) == ["d1", "d2", "d3", "d4"]
    with pytest.raises(ValueError):
        weighted_fusion(bm25, dense, 1.5)


def test_scores_are_normalised_per_query():
    assert minmax_normalize({"a": 3.0, "b": 1.0, "c": 2.0}) == {"a": 1.0, "b": 0.0, "c": 0.5}
    assert minmax_normalize({"a": 7.0, "b": 7.0}) == {"a": 1.0, "b": 1.0}
    assert minmax_normalize({}) == {}
    # Scale does not matter: BM25 in the tens and cosines below 1 fuse the same after normalisation.
    assert weighted_fusion({"a": 30, "b": 10}, {"b": 0.9, "c": 0.1}, 0.3) == \
        pytest.approx(weighted_fusion({"a": 3, "b": 1}, {"b": 9, "c": 1}, 0.3))


def test_reciprocal_rank_fusion_of_hand_made_rankings():
    first = {"d1": 3.0, "d2": 2.0, "d3": 1.0}
    second = {"d3": 0.9, "d1": 0.8, "d4": 0.7}
    fused = reciprocal_rank_fusion([first, second])
    assert fused["d1"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["d4"] == pytest.approx(1 / 63)
    assert ranking(fused) == ["d1", "d3", "d2", "d4"]
    assert [ranking(r) for r in fuse_all([first], [second], None)] == [["d1", "d3", "d2", "d4"]]


def test_runs_from_top_k_arrays():
    import numpy as np

    runs = runs_from_top_k(["p0", "p1", "p2"], np.array([[2, 0]]), np.array([[0.9, 0.1]]))
    assert runs == [{"p2": 0.9, "p0": 0.1}]


def planted_queries(weight_low: float, weight_high: float, copies: int = 3):
    """Queries on which the relevant passage r ranks first only for weight_low < w < weight_high.

    Type 1: a = {r: 1, x: c1, z: 0}, b = {x: 1, r: 0, z: 0}: r beats x iff w > 1 / (2 - c1).
    Type 2: a = {x: 1, r: c2, z: 0}, b = {r: 1, x: 0, z: 0}: r beats x iff w < 1 / (2 - c2).
    """
    c1, c2 = 2 - 1 / weight_low, 2 - 1 / weight_high
    runs_a, runs_b, relevant = [], [], []
    for i in range(copies):
        runs_a += [{f"r{i}": 1.0, f"x{i}": c1, f"z{i}": 0.0}, {f"x{i}": 1.0, f"r{i}": c2, f"z{i}": 0.0}]
        runs_b += [{f"x{i}": 1.0, f"r{i}": 0.0, f"z{i}": 0.0}, {f"r{i}": 1.0, f"x{i}": 0.0, f"z{i}": 0.0}]
        relevant += [[f"r{i}"], [f"r{i}"]]
    return runs_a, runs_b, relevant


def test_weight_is_chosen_on_training_queries_and_test_labels_do_not_change_it():
    train = planted_queries(0.65, 0.75)  # only w = 0.7 of the grid puts r first everywhere
    choice = choose_weight(*train, metric="mrr@5", rule="max")
    assert choice.weight == 0.7
    assert choice.curve[0.7] == 1.0 and choice.curve[0.6] < 1.0 and choice.curve[0.8] < 1.0
    # Test queries planted for another weight, with their labels changed every way: the weight
    # comes from the training queries alone, so nothing about the test set moves it.
    test_a, test_b, test_relevant = planted_queries(0.55, 0.65)
    assert choose_weight(test_a, test_b, test_relevant, metric="mrr@5", rule="max").weight == 0.6  # the test set's
    for labels in (test_relevant, [["x0"]] * len(test_relevant), [["z0"]] * len(test_relevant)):
        assert choose_weight(*train, metric="mrr@5", rule="max").weight == 0.7
        fused = fuse_all(test_a, test_b, choose_weight(*train, metric="mrr@5", rule="max").weight)
        assert len(fused) == len(labels)


def test_ties_go_to_the_even_mix():
    runs = [{"r": 1.0, "x": 0.0}]
    for rule in ("max", "smoothed"):
        choice = choose_weight(runs, runs, [["r"]], metric="ndcg@5", rule=rule)
        assert set(choice.curve.values()) == {1.0}
        assert choice.weight == 0.5
    # One standard error: every weight is as good, so the smallest move away from the second run (BM25).
    assert choose_weight(runs, runs, [["r"]], metric="ndcg@5", rule="one_se").weight == 0.0


def test_choose_weight_rejects_mismatched_inputs():
    with pytest.raises(ValueError):
        choose_weight([{"a": 1.0}], [], [["a"]])


def test_fuse_top_k_arrays_and_the_saved_weight(tmp_path):
    import json

    from ragtune.core.fusion import fuse_top_k, saved_weight

    ids = ["p0", "p1", "p2", "p3"]
    ranked, scores = fuse_top_k(ids, ([[0, 1, 2]], [[10.0, 5.0, 0.0]]), ([[2, 1, 3]], [[1.0, 0.9, 0.0]]), 0.5, 3)
    assert ranked == [[1, 2, 0]] and scores[0] == pytest.approx([0.7, 0.5, 0.5])
    (tmp_path / "metrics.json").write_text(json.dumps({"fusion": {"first_stage": "hybrid", "dense_weight": 0.4}}))
    assert saved_weight(tmp_path, "dense_weight") == 0.4
    assert saved_weight(tmp_path, "reranker_weight") is None
    assert saved_weight(tmp_path / "missing", "dense_weight") is None


# ---------------------------------------------------------------------------- weight rules on 20 dev queries


def plateau_and_lucky_peak(n: int = 20):
    """Per-query metric values over the weight grid, as 20 dev queries give them.

    BM25 (0.0) is clearly worse; 0.3-0.6 is a flat plateau; 0.8 is a lucky peak beside a cliff: it gains on
    6 queries and loses on 4 against the plateau, so its mean is the highest but not by a standard error.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    plateau = rng.uniform(0.4, 1.0, n)
    lift = np.zeros(n)
    lift[:6], lift[6:10] = 0.5, -0.4  # +0.07 on average, noisy
    values = {0.0: plateau - 0.2, 0.1: plateau - 0.12, 0.2: plateau - 0.06, 0.3: plateau - 0.01, 0.4: plateau,
              0.5: plateau, 0.6: plateau - 0.01, 0.7: plateau - 0.15, 0.8: plateau + lift, 0.9: plateau - 0.3,
              1.0: plateau - 0.35}
    return {w: np.clip(v, 0.0, 1.5) for w, v in values.items()}


def test_one_standard_error_and_smoothing_choose_the_plateau_over_a_lucky_peak():
    from ragtune.core.fusion import pick_weight

    per_query = plateau_and_lucky_peak()
    means = {w: v.mean() for w, v in per_query.items()}
    assert max(means, key=means.get) == 0.8  # the peak is the maximum
    assert pick_weight(per_query, "max") == 0.8
    assert pick_weight(per_query, "one_se") in (0.3, 0.4)  # the smallest move from BM25 onto the plateau
    assert pick_weight(per_query, "smoothed") in (0.4, 0.5)
    # A real improvement (the same +0.3 on every query) is not a lucky peak: it is taken.
    per_query[0.8] = per_query[0.5] + 0.3
    assert pick_weight(per_query, "one_se") == 0.8


def test_weight_choice_reports_its_standard_error_and_the_bm25_reference():
    train = planted_queries(0.65, 0.75)
    choice = choose_weight(*train, metric="mrr@5", rule="max")
    assert choice.reference == choice.curve[0.0] and choice.best_weight == 0.7 and choice.queries == len(train[0])
    record = choice.record()
    assert record["rule"] == "max" and record["reference_value"] == round(choice.curve[0.0], 6)
    assert choice.value == 1.0 and record["standard_error"] == 0.0  # every query ranks r first at 0.7
    noisy = choose_weight(*train, metric="mrr@5", rule="max", grid=(0.0, 0.5))
    assert noisy.weight == 0.5 and noisy.standard_error > 0
    with pytest.raises(ValueError, match="unknown weight rule"):
        choose_weight(*train, metric="mrr@5", rule="peak")

"""System names and the patterns that pick systems (evaluate_rag.py --baseline, --answer_systems)."""

from __future__ import annotations

import pytest

from ragtune.pipeline.names import WEIGHT, could_match, expected_names, hybrid_name, matching, rerank_name

EXPECTED = expected_names(True, True, ["ft"], ["rr"])


def test_names_read_as_results_md_shows_them():
    assert hybrid_name("ft", "weighted 0.7") == "ft + bm25 (weighted 0.7)"
    assert rerank_name("ft + bm25 (weighted 0.7)", "rr", 0.25) == "ft + bm25 (weighted 0.7) + rr (fused 0.25)"
    assert EXPECTED == ["bm25", "ft", "ft + bm25 (rrf)", f"ft + bm25 (weighted {WEIGHT})", "ft + rr",
                        f"ft + bm25 (weighted {WEIGHT}) + rr", f"ft + bm25 (weighted {WEIGHT}) + rr (fused {WEIGHT})"]
    assert expected_names(False, False, ["ft"], []) == ["ft"]


@pytest.mark.parametrize("pattern", ["bm25", "*", "*rr*", "ft + bm25 (weighted 0.6)", "ft + bm25 (weighted 0.6) + rr*",
                                     "*(fused 0.3)", "ft + bm25 (rrf)"])
def test_a_pattern_that_can_match_once_weights_are_chosen_passes_the_early_check(pattern):
    assert could_match(pattern, EXPECTED)


@pytest.mark.parametrize("pattern", ["BM25", "ft + bm25 (rff)", "ft+rr", "base*", "ft + rr (fused 0.3)"])
def test_a_name_that_will_not_exist_fails_the_early_check(pattern):
    assert not could_match(pattern, EXPECTED)


def test_patterns_pick_names_in_their_order_and_report_the_unmatched():
    names = ["bm25", "ft", "ft + bm25 (rrf)", "ft + bm25 (weighted 0.6)", "ft + rr"]
    assert matching(["*rr*", "bm25"], names) == (["bm25", "ft + bm25 (rrf)", "ft + rr"], [])
    assert matching(["ft + bm25 (weighted 0.5)"], names) == ([], ["ft + bm25 (weighted 0.5)"])

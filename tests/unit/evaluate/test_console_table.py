"""evaluate_rag.py's console table: best first on the main metric, winner and baseline marked, answer metrics as
columns, and p-values Holm-corrected when several systems are compared with the baseline (results.json's
``p_holm``, results.md's column)."""

from __future__ import annotations

import pytest

from ragtune.evaluate.reports import console_table, significance_markdown, with_holm


def entry(p: float, diff: float = 0.1) -> dict:
    return {"baseline": "bm25", "metric": "ndcg@5", "mean_difference": diff, "ci_low": diff - 0.05,
            "ci_high": diff + 0.05, "p_value": p, "significant": p < 0.05, "queries": 30, "resamples": 999}


SYSTEMS = [
    {"name": "bm25", "metrics": {"ndcg@5": 0.40}},
    {"name": "dense-a", "metrics": {"ndcg@5": 0.55, "rouge_l@5": 0.31, "bleu4@5": 0.12}},
    {"name": "dense-b", "metrics": {"ndcg@5": 0.61}},
    {"name": "hybrid", "metrics": {"ndcg@5": 0.48}},
]


def test_holm_p_values_by_hand():
    # Raw p 0.01, 0.04, 0.03 over m = 3: sorted 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.06, 0.04*1) = 0.06.
    adjusted = with_holm({"dense-a": entry(0.04), "dense-b": entry(0.01), "hybrid": entry(0.03)})
    assert {name: e["p_holm"] for name, e in adjusted.items()} == pytest.approx(
        {"dense-a": 0.06, "dense-b": 0.03, "hybrid": 0.06})
    assert adjusted["dense-a"]["p_value"] == 0.04  # the raw p-value is kept
    assert with_holm({"dense-a": entry(0.04)})["dense-a"]["p_holm"] == pytest.approx(0.04)


def test_console_lists_systems_best_first_with_the_winner_and_baseline_marked():
    significance = with_holm({"dense-a": entry(0.04), "dense-b": entry(0.01), "hybrid": entry(0.03)})
    table = console_table(SYSTEMS, 5, significance=significance, baseline="bm25", main_metric="ndcg@5")
    lines = table.splitlines()
    rows = [line.split()[0] for line in lines[2:6]]
    assert rows == ["dense-b", "dense-a", "hybrid", "bm25"]
    assert lines[2].split()[1] == "winner" and lines[5].split()[1] == "baseline"
    header = lines[0].split()
    assert "rouge_l@5" in header and "bleu4@5" in header  # answer metrics as columns
    # Holm-corrected p in the console: dense-a's raw 0.04 becomes 0.06, no longer marked.
    assert lines[3].rstrip().endswith("(p=0.060)") and lines[2].rstrip().endswith("(p=0.030)*")
    assert "Holm-corrected over the 3 systems" in table


def test_results_markdown_has_a_holm_column():
    significance = with_holm({"dense-a": entry(0.04), "dense-b": entry(0.01), "hybrid": entry(0.03)})
    payload = {"config": {"main_metric": "ndcg@5"}, "systems": SYSTEMS, "significance": significance}
    md = "\n".join(significance_markdown(payload, "bm25"))
    assert "p (Holm)" in md
    assert "| dense-a | 0.5500 | +0.1000 [+0.0500, +0.1500] p=0.040* | p=0.060 |" in md

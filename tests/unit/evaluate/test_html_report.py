"""results.html as a pure function of the results payload and the per-query view: ranked table, winner and baseline,
intervals and Holm p-values, a self-contained page, texts that cannot break out of their place, no secret."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest

from ragtune.core.data import Corpus, LabelledQuery
from ragtune.core.redaction import REDACTED
from ragtune.core.significance import holm_adjust
from ragtune.evaluate.html_report import (
    drilldown_data,
    holm_p_values,
    metric_intervals,
    render_results_html,
    table_keys,
)

KEY = "hf_" + "A1b2C3d4E5f6G7h8I9j0"  # key-shaped: shown() must redact it wherever it appears
HOSTILE = "</script><script>alert('x')</script><b>bold</b>"


def make_run():
    corpus = Corpus(["1", "2", "3", "4"], ["first passage", f"second passage {KEY}", "third", "fourth"])
    queries = [LabelledQuery(f"question one {HOSTILE}", ["1"], answer="ref one", row=2),
               LabelledQuery("question two", ["4"], answer="ref two", row=3)]
    per_query = {"bm25": [1.0, 0.0], "dense": [0.5, 0.0], "hybrid": [1.0, 1.0]}
    ranked = {"bm25": [[0, 1], [1, 2]], "dense": [[1, 0], [2, 1]], "hybrid": [[0, 1], [3, 2]]}
    systems = [SimpleNamespace(name=name, ranked=ranked[name], scores=[[2.0, float("-inf")], [1.0, 0.5]],
                               per_query=[{"ndcg@3": v, "hit@3": v} for v in per_query[name]])
               for name in ("bm25", "dense", "hybrid")]
    payload = {
        "config": {"main_metric": "ndcg@3", "k": [1, 3], "baseline_system": "bm25", "ragtune_version": "t",
                   "corpus": {"path": "c.csv", "passages": 4}, "test_data": {"path": "t.csv", "queries": 2}},
        "systems": [{"name": s.name, "kind": s.name, "info": {}, "metrics": {
            "ndcg@3": sum(per_query[s.name]) / 2, "hit@3": sum(per_query[s.name]) / 2}} for s in systems],
        "significance": {name: {"mean_difference": d, "ci_low": d - 0.1, "ci_high": d + 0.1, "p_value": p,
                                "resamples": 100, "queries": 2, "caveat": None}
                         for name, d, p in (("dense", -0.25, 0.02), ("hybrid", 0.5, 0.03))},
    }
    records = [{"system": "hybrid", "k": 3, "row": 2, "answer": f"generated {HOSTILE}"}]
    return payload, corpus, queries, systems, records


def render():
    payload, corpus, queries, systems, records = make_run()
    details = drilldown_data(payload, queries, systems, corpus, records, depth=2)
    intervals = metric_intervals(systems, table_keys(payload))
    return render_results_html(payload, details, intervals), details


def table_rows(page: str) -> list[tuple[str, str]]:
    """(class attribute, system name) of each systems-table row, in page order."""
    table = page[page.index('id="systems-table"'):page.index("</table>")]
    return re.findall(r'<tr class="([^"]*)" data-system="([^"]*)"', table)


def test_systems_ranked_by_main_metric_with_winner_and_baseline():
    page, _ = render()
    rows = table_rows(page)
    assert [name for _, name in rows] == ["hybrid", "bm25", "dense"]
    assert rows[0][0] == "winner" and rows[1][0] == "baseline" and rows[2][0] == ""
    values = [float(v) for v in re.findall(r'<td class="num main" data-value="([0-9.]+)"', page)]
    assert values == sorted(values, reverse=True)


def test_holm_corrected_p_values_and_intervals_are_shown():
    page, _ = render()
    adjusted = holm_adjust([0.02, 0.03])  # 0.04, 0.04
    assert page.count(f"{adjusted[0]:.3f}") >= 2
    assert "[0.000, 1.000]" in page  # bm25's interval over two queries scoring 1 and 0
    assert "Holm-corrected across the 2 systems" in page


def test_page_is_self_contained_and_texts_stay_text():
    page, details = render()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and "url(" not in page
    assert HOSTILE not in page  # inside the JSON every "<" is escaped: the data cannot close its script
    data = page[page.index('id="drilldown-data">') + len('id="drilldown-data">'):]
    data = json.loads(data[:data.index("</script>")])
    assert data == json.loads(json.dumps(details))
    assert data["queries"][0]["text"].endswith(HOSTILE)
    assert data["queries"][0]["answers"][0] == {"3": f"generated {HOSTILE}"}  # hybrid first: the winner


def test_drilldown_marks_misses_and_keeps_scores_json_safe():
    _, details = render()
    assert details["systems"] == ["hybrid", "bm25", "dense"] and details["winner"] == "hybrid"
    first, second = details["queries"]
    assert first["gold"] == ["1"] and not first["all_miss"]
    assert not second["all_miss"]  # hybrid found passage 4
    assert first["runs"][0] == [["1", 2.0], ["2", None]]  # -inf (below a reranked head) is no number
    assert details["passages"]["4"] == "fourth"


def test_no_secret_in_the_page():
    page, _ = render()
    assert KEY not in page and "\\u003c" + REDACTED[1:] in page  # in the drill-down's JSON


def test_the_payloads_holm_p_values_are_used_when_present():
    payload = make_run()[0]
    for entry, p_holm in zip(payload["significance"].values(), (0.5, 0.75)):
        entry["p_holm"] = p_holm
    assert holm_p_values(payload) == {"dense": 0.5, "hybrid": 0.75}
    del payload["significance"]["dense"]["p_holm"]
    assert holm_p_values(payload) == pytest.approx({"dense": 0.04, "hybrid": 0.04})

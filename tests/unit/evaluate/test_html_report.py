"""results.html as a pure function of the results payload and the per-query view: ranked table, winner and baseline,
intervals and Holm p-values, a self-contained page, texts that cannot break out of their place, no secret."""

from __future__ import annotations

import json
import re

import pytest
from html_pages import HOSTILE, KEY, make_run, render_full_run

from ragtune.core.redaction import REDACTED
from ragtune.core.significance import holm_adjust
from ragtune.evaluate.html_report import (
    drilldown_data,
    holm_p_values,
    metric_intervals,
    render_results_html,
    table_keys,
)


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


def test_answer_and_judge_metrics_are_columns_with_intervals_where_there_are_rows():
    page = render_full_run()
    head = page[page.index('id="systems-table"'):page.index("</thead>")]
    for key in ("llm_context_precision@3", "rouge_l@3", "bleu4@3", "groundedness@3", "noise_sensitivity@3 ↓"):
        assert f"<th>{key}</th>" in head, key
    hybrid = page[page.index('data-system="hybrid"'):]
    cells = re.findall(r'<td class="num"[^>]*>([^<]*)(<span class="ci">[^<]*</span>)?</td>', hybrid[:hybrid.index("</tr>")])
    by_value = {value: ci for value, ci in cells}
    assert by_value["0.400"] and not by_value["0.200"]  # rouge_l with its interval, corpus BLEU without


def test_main_chart_has_an_error_bar_per_system_and_the_k_charts_a_line_per_system():
    page = render_full_run()
    chart = page[page.index('id="main-chart"'):page.index("</svg>", page.index('id="main-chart"'))]
    assert chart.count('class="err"') == 3 * 3  # whisker and two caps for each of the three systems
    assert chart.count("<rect") == 3
    bm25_low, bm25_high = 270 + 300 * 0.0, 270 + 300 * 1.0  # bm25 scores 1 and 0: interval [0, 1]
    assert f'x1="{bm25_low:.1f}" x2="{bm25_high:.1f}"' in chart
    kcharts = re.findall(r'<svg class="kchart".*?</svg>', page)
    assert len(kcharts) == 2 and all(svg.count("<polyline") == 3 for svg in kcharts)
    assert 'aria-label="recall@k"' in kcharts[0] and 'aria-label="mrr@k"' in kcharts[1]


def test_fusion_weights_say_where_they_came_from_and_the_audit_is_summarised():
    page = render_full_run()
    fusion = page[page.index('id="fusion-table"'):page.index("</table>", page.index('id="fusion-table"'))]
    assert re.search(r">hybrid</th><td>dense weight</td><td class=\"num\">0.4</td><td class=\"num\">100</td>"
                     r"<td>chosen here on --train_data by rule smoothed on 20 queries", fusion)
    audit = page[page.index('id="audit"'):]
    assert "not checked (<code>--pii off</code>)" in audit and "`" not in audit[:audit.index("</ul>")]
    assert "Leakage: 1 of 2 test queries have a near-copy in --train_data." in audit


def test_page_fits_a_phone_and_prints_without_its_controls():
    page = render_full_run()
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "@media (max-width:600px)" in page and "@media print{.controls{display:none}" in page


def test_intervals_from_few_queries_carry_the_caveat_without_a_comparison_too():
    payload, corpus, queries, systems, records = make_run()
    payload["significance"] = {}  # one system, or only the baseline: no Δ column to carry it
    details = drilldown_data(payload, queries, systems, corpus, records, depth=2)
    page = render_results_html(payload, details, metric_intervals(systems, table_keys(payload)))
    assert "<b>Caution, only 2 queries: the interval and p-value are rough.</b>" in page

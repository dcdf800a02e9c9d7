"""results.html: the evaluation as one page to look at, not read: systems ranked with their uncertainty, charts, and
each query's gold passages beside what every system retrieved and answered.

One self-contained file (styles, script and data inline; charts are SVG drawn here), so it opens offline, from an
e-mail or a CI artifact, on a phone, and prints. Nothing on it is fetched. The page is built by a pure function,
:func:`render_results_html`, from the results payload (results.json's content, already shown as every report shows
it) and :func:`drilldown_data` (the per-query view: texts through :func:`ragtune.core.redaction.shown`, so personal
values are masked under ``--pii warn``; under ``--pii redact`` the texts are the redacted copies evaluated).

Numbers: each mean metric with its 95% percentile-bootstrap interval over the test queries
(:func:`ragtune.core.significance.bootstrap_ci`, the same draws for every system and metric); the difference with
the baseline is results.json's paired comparison, its p-value Holm-corrected across the systems compared
(:func:`ragtune.core.significance.holm_adjust`).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

from ragtune.audit.report import pii_summary_line
from ragtune.core.io import write_text
from ragtune.core.metrics import RANKING_METRICS, split_metric_key
from ragtune.core.redaction import shown
from ragtune.core.significance import bootstrap_ci, few_queries_caveat, holm_adjust

HTML_FILE = "results.html"
# Resamples per interval: the table shows two decimals of ~40 intervals, and the page is rewritten after each stage.
INTERVAL_RESAMPLES = 2000
# The systems drawn across k (besides the baseline).
TOP_SYSTEMS_ACROSS_K = 4
TABLE_CONTEXT_METRICS = ("context_precision", "llm_context_precision", "llm_context_recall",
                         "llm_context_entities_recall")
ANSWER_METRICS = ("string_presence", "rouge_l", "bleu4", "groundedness", "response_relevancy", "noise_sensitivity")
LOWER_IS_BETTER = {"noise_sensitivity"}
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


# ---------------------------------------------------------------------------- data


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def metric_intervals(systems: Sequence[Any], keys: Iterable[str], seed: int = 0,
                     n_resamples: int = INTERVAL_RESAMPLES) -> dict[str, dict[str, list[float]]]:
    """Per system name and metric key, the 95% bootstrap interval of its mean over the queries scored (a query
    left out of the mean, None, is left out here too); no interval without per-query values (corpus BLEU)."""
    out: dict[str, dict[str, list[float]]] = {}
    for system in systems:
        found: dict[str, list[float]] = {}
        for key in keys:
            values = [row[key] for row in system.per_query if row.get(key) is not None]
            if values:
                _, low, high = bootstrap_ci(values, n_resamples=n_resamples, seed=seed)
                found[key] = [low, high]
        out[system.name] = found
    return out


def table_keys(payload: dict[str, Any]) -> list[str]:
    """The metric columns of the systems table: the main metric, the other ranking and context metrics at its k,
    then the answer metrics at each --answer_k; only those some system has."""
    main = payload["config"]["main_metric"]
    k = split_metric_key(main)[1]
    answer_ks = (payload.get("generator") or {}).get("answer_k") or []
    names = [f"{name}@{k}" for name in (*RANKING_METRICS, *TABLE_CONTEXT_METRICS) if name != "f1"]
    names += [f"{name}@{answer_k}" for answer_k in answer_ks for name in ANSWER_METRICS]
    present = {key for s in payload["systems"] for key, value in s["metrics"].items() if value is not None}
    return [main] + [key for key in names if key != main and key in present]


def answers_by_query(records: Sequence[dict[str, Any]]) -> dict[tuple[str, Any], dict[str, str]]:
    """(system, row) -> {k: answer} from answers.csv's records."""
    out: dict[tuple[str, Any], dict[str, str]] = {}
    for record in records:
        out.setdefault((record["system"], record["row"]), {})[str(record["k"])] = shown(str(record["answer"] or ""))
    return out


def drilldown_data(payload: dict[str, Any], queries: Sequence[Any], systems: Sequence[Any], corpus: Any,
                   answer_records: Sequence[dict[str, Any]], depth: int) -> dict[str, Any]:
    """The per-query view the page's script draws: each query's text, gold passages and reference answer; per
    system its top ``depth`` (passage id, final score), its main-metric value and its answers. Passage texts are
    stored once. Systems are in the table's order (best first)."""
    main = payload["config"]["main_metric"]
    order = [s["name"] for s in ranked_systems(payload)]
    by_name = {system.name: system for system in systems}
    chosen = [by_name[name] for name in order if name in by_name]
    answers = answers_by_query(answer_records)
    used: set[str] = set()
    rows = []
    for qi, query in enumerate(queries):
        gold = list(query.relevant_ids)
        runs = [[[corpus.ids[pi], _finite(score)] for pi, score in zip(s.ranked[qi][:depth], s.scores[qi][:depth])]
                for s in chosen]
        used.update(gold, (pid for run in runs for pid, _ in run))
        rows.append({"row": query.row, "text": shown(query.query), "gold": gold,
                     "reference": shown(query.answer or ""), "difficulty": getattr(query, "difficulty", None),
                     "runs": runs, "main": [_finite(s.per_query[qi].get(main)) if s.per_query else None
                                            for s in chosen],
                     "answers": [answers.get((s.name, query.row), {}) for s in chosen],
                     "all_miss": all(not set(gold) & {pid for pid, _ in run} for run in runs)})
    passages = {pid: shown(corpus.texts[corpus.index_of[pid]]) for pid in sorted(used) if pid in corpus.index_of}
    return {"systems": [s.name for s in chosen], "main": main, "depth": depth,
            "baseline": payload["config"].get("baseline_system"), "winner": winner(payload),
            "passages": passages, "queries": rows}


def ranked_systems(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The systems by the main metric, best first (no value last; equals keep the evaluation's order)."""
    main = payload["config"]["main_metric"]
    sign = -1 if split_metric_key(main)[0] in LOWER_IS_BETTER else 1
    return sorted(payload["systems"], key=lambda s: (s["metrics"].get(main) is None,
                                                     -sign * (s["metrics"].get(main) or 0.0)))


def winner(payload: dict[str, Any]) -> str | None:
    best = ranked_systems(payload)[0] if payload["systems"] else None
    return best["name"] if best and best["metrics"].get(payload["config"]["main_metric"]) is not None else None


def holm_p_values(payload: dict[str, Any]) -> dict[str, float]:
    """Each compared system's p-value against the baseline, Holm-corrected across the systems compared (results.json's
    ``p_holm``, computed here from the raw p-values for a payload without it)."""
    significance = payload.get("significance") or {}
    names = list(significance)
    if all("p_holm" in significance[name] for name in names):
        return {name: significance[name]["p_holm"] for name in names}
    return dict(zip(names, holm_adjust([significance[name]["p_value"] for name in names])))


# ---------------------------------------------------------------------------- the page


def write_results_html(path: str | Path, payload: dict[str, Any], queries: Sequence[Any], systems: Sequence[Any],
                       corpus: Any, answer_records: Sequence[dict[str, Any]], depth: int, seed: int = 0) -> Path:
    """results.html from what evaluate_rag.py's report holds (``payload`` already shown as results.json)."""
    intervals = metric_intervals(systems, table_keys(payload), seed)
    details = drilldown_data(payload, queries, systems, corpus, answer_records, depth)
    write_text(path, render_results_html(payload, details, intervals))
    return Path(path)


def render_results_html(payload: dict[str, Any], details: dict[str, Any],
                        intervals: dict[str, dict[str, list[float]]]) -> str:
    """The whole page: header, systems table, charts, per-query drill-down, audit and fusion notes."""
    config = payload["config"]
    sections = [
        _header(payload),
        _section("Systems", "systems", systems_table(payload, intervals) + _table_note(payload)),
        _section("Charts", "charts", main_metric_chart(payload, intervals) + across_k_charts(payload)),
        _section("Queries", "queries", DRILLDOWN_SHELL),
        _section("Fusion weights", "fusion", fusion_table(payload)),
        _section("Data audit", "audit", audit_list(payload)),
    ]
    data = json.dumps(details, ensure_ascii=False, allow_nan=False).replace("<", "\\u003c")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>ragtune results: {_e(config['main_metric'])}</title><style>{CSS}</style></head><body><main>"
            + "".join(sections)
            + f"</main><script type=\"application/json\" id=\"drilldown-data\">{data}</script>"
            f"<script>{SCRIPT}</script></body></html>\n")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _code_spans(text: str) -> str:
    """Escaped text with markdown's `code` spans (the audit's lines are written for markdown) as <code>."""
    parts = _e(text).split("`")
    return "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts))


def _section(title: str, anchor: str, body: str) -> str:
    return f"<section id=\"{anchor}\"><h2>{_e(title)}</h2>{body}</section>"


def _header(payload: dict[str, Any]) -> str:
    config = payload["config"]
    corpus, test = config["corpus"], config["test_data"]
    parts = [f"corpus <code>{_e(corpus['path'])}</code> ({corpus['passages']} passages)",
             f"test queries <code>{_e(test['path'])}</code> ({test['queries']})",
             f"k = {_e(', '.join(map(str, config['k'])))}", f"main metric <b>{_e(config['main_metric'])}</b>"]
    if payload.get("generator"):
        parts.append(f"answers by <code>{_e(payload['generator']['model'])}</code>")
    if payload.get("judge"):
        parts.append(f"judge <code>{_e(payload['judge']['model'])}</code>")
    nav = " · ".join(f"<a href=\"#{a}\">{t}</a>" for a, t in (("systems", "systems"), ("charts", "charts"),
                                                                 ("queries", "queries"), ("fusion", "fusion"),
                                                                 ("audit", "audit")))
    return (f"<header><h1>Retrieval evaluation</h1><p>{'; '.join(parts)}.</p>"
            f"<div class=\"small\">ragtune {_e(config.get('ragtune_version', ''))} · <nav>{nav}</nav></div></header>")


def _fmt(value: Any, digits: int = 3) -> str:
    value = _finite(value)
    return "n/a" if value is None else f"{value:.{digits}f}"


def _value_cell(value: Any, interval: Sequence[float] | None, extra: str = "") -> str:
    ci = (f"<span class=\"ci\">[{interval[0]:.3f}, {interval[1]:.3f}]</span>"
          if interval and _finite(value) is not None else "")
    data = "" if _finite(value) is None else f" data-value=\"{value:.6f}\""
    return f"<td class=\"num{extra}\"{data}>{_fmt(value)}{ci}</td>"


def _delta_cells(name: str, payload: dict[str, Any], holm: dict[str, float]) -> str:
    entry = (payload.get("significance") or {}).get(name)
    if name == payload["config"].get("baseline_system"):
        return "<td class=\"num\">baseline</td><td></td>"
    if entry is None:
        return "<td></td><td></td>"
    p = holm[name]
    star = "<b class=\"sig\">*</b>" if p < 0.05 else ""
    return (f"<td class=\"num delta\">{entry['mean_difference']:+.3f}<span class=\"ci\">[{entry['ci_low']:+.3f}, "
            f"{entry['ci_high']:+.3f}]</span></td><td class=\"num p\">{'&lt;0.001' if p < 0.001 else f'{p:.3f}'}"
            f"{star}</td>")


def systems_table(payload: dict[str, Any], intervals: dict[str, dict[str, list[float]]]) -> str:
    """Systems ranked by the main metric: winner and baseline marked, every value with its 95% interval."""
    keys = table_keys(payload)
    main, baseline, best = keys[0], payload["config"].get("baseline_system"), winner(payload)
    holm = holm_p_values(payload)
    head = ("<tr><th>#</th><th class=\"name\">system</th>"
            f"<th class=\"main\">{_e(main)}</th><th>Δ vs baseline [95% CI]</th><th>p (Holm)</th>"
            + "".join(f"<th>{_e(key)}{' ↓' if split_metric_key(key)[0] in LOWER_IS_BETTER else ''}</th>"
                      for key in keys[1:]) + "</tr>")
    rows = []
    for rank, system in enumerate(ranked_systems(payload), start=1):
        name = system["name"]
        classes = [c for c, on in (("winner", name == best), ("baseline", name == baseline)) if on]
        badges = ("<span class=\"badge win\">best</span>" if name == best else "") + (
            "<span class=\"badge base\">baseline</span>" if name == baseline else "")
        cells = "".join(_value_cell(system["metrics"].get(key), intervals.get(name, {}).get(key))
                        for key in keys[1:])
        rows.append(f"<tr class=\"{' '.join(classes)}\" data-system=\"{_e(name)}\"><td class=\"num\">{rank}</td>"
                    f"<th class=\"name\" scope=\"row\">{_e(name)} {badges}<div class=\"kind\">{_e(system['kind'])}"
                    f"</div></th>{_value_cell(system['metrics'].get(main), intervals.get(name, {}).get(main), ' main')}"
                    f"{_delta_cells(name, payload, holm)}{cells}</tr>")
    return (f"<div class=\"scroll\"><table id=\"systems-table\"><thead>{head}</thead><tbody>{''.join(rows)}"
            "</tbody></table></div>")


def _table_note(payload: dict[str, Any]) -> str:
    significance = payload.get("significance") or {}
    first = next(iter(significance.values()), None)
    note = (f"Sorted by {_e(payload['config']['main_metric'])}. Brackets: 95% percentile-bootstrap interval over "
            f"the {payload['config']['test_data']['queries']} test queries ({INTERVAL_RESAMPLES} resamples). ")
    if first:
        note += (f"Δ: mean paired difference with the baseline and its bootstrap interval ({first['resamples']} "
                 "resamples); p: two-sided paired randomisation test, Holm-corrected across the "
                 f"{len(significance)} systems compared; * p &lt; 0.05. ")
    caveat = few_queries_caveat(payload["config"]["test_data"]["queries"])  # the intervals need it without a Δ too
    if caveat:
        note += f"<b>Caution, {_e(caveat)}.</b> "
    if any(split_metric_key(k)[0] in LOWER_IS_BETTER for k in table_keys(payload)):
        note += "↓: lower is better. "
    return f"<p class=\"small\">{note}bleu4 is a corpus-level score: no interval.</p>"


# ---------------------------------------------------------------------------- charts (inline SVG)


def main_metric_chart(payload: dict[str, Any], intervals: dict[str, dict[str, list[float]]]) -> str:
    """Horizontal bars: the main metric per system, best first, with its 95% interval as an error bar."""
    main = payload["config"]["main_metric"]
    systems = [s for s in ranked_systems(payload) if _finite(s["metrics"].get(main)) is not None]
    if not systems:
        return ""
    label_w, bar_w, row_h = 270, 300, 22
    height = 30 + row_h * len(systems)
    parts = [_axis_ticks(label_w, bar_w, height - 8)]
    baseline, best = payload["config"].get("baseline_system"), winner(payload)
    for i, system in enumerate(systems):
        name, value = system["name"], system["metrics"][main]
        y = 8 + i * row_h
        color = "#2e7d32" if name == best else "#757575" if name == baseline else "#1f77b4"
        low, high = intervals.get(name, {}).get(main, [value, value])
        x0, x1 = label_w + bar_w * low, label_w + bar_w * high
        label = f"{i + 1}. " + (name if len(name) <= 40 else name[:14] + "…" + name[-25:])  # the end tells apart
        parts.append(f"<text x=\"{label_w - 6}\" y=\"{y + 14}\" text-anchor=\"end\" class=\"lbl\">{_e(label)}"
                     f"<title>{_e(name)}</title></text>"
                     f"<rect x=\"{label_w}\" y=\"{y + 3}\" width=\"{bar_w * value:.1f}\" height=\"{row_h - 8}\" "
                     f"fill=\"{color}\" opacity=\"0.8\"/>"
                     f"<line x1=\"{x0:.1f}\" x2=\"{x1:.1f}\" y1=\"{y + 11}\" y2=\"{y + 11}\" class=\"err\"/>"
                     f"<line x1=\"{x0:.1f}\" x2=\"{x0:.1f}\" y1=\"{y + 6}\" y2=\"{y + 16}\" class=\"err\"/>"
                     f"<line x1=\"{x1:.1f}\" x2=\"{x1:.1f}\" y1=\"{y + 6}\" y2=\"{y + 16}\" class=\"err\"/>"
                     f"<text x=\"{label_w + bar_w + 6}\" y=\"{y + 14}\" class=\"val\">{value:.3f}</text>")
    # In a scrolling box: on a phone the chart keeps readable labels and scrolls sideways, the page does not.
    return (f"<figure class=\"scroll\"><svg id=\"main-chart\" viewBox=\"0 0 {label_w + bar_w + 50} {height}\" role=\"img\" "
            f"aria-label=\"{_e(main)} per system\">{''.join(parts)}</svg><figcaption>{_e(main)} per system, best "
            "first; whiskers: 95% bootstrap interval; green: best, grey: baseline.</figcaption></figure>")


def _axis_ticks(left: float, width: float, bottom: float) -> str:
    ticks = []
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + width * tick
        ticks.append(f"<line x1=\"{x:.1f}\" x2=\"{x:.1f}\" y1=\"4\" y2=\"{bottom - 10}\" class=\"grid\"/>"
                     f"<text x=\"{x:.1f}\" y=\"{bottom}\" text-anchor=\"middle\" class=\"tick\">{tick:g}</text>")
    return "".join(ticks)


def across_k_charts(payload: dict[str, Any]) -> str:
    """recall@k and MRR@k against k for the best systems and the baseline (lines), one small chart each."""
    ks = payload["config"]["k"]
    baseline = payload["config"].get("baseline_system")
    top = ranked_systems(payload)[:TOP_SYSTEMS_ACROSS_K]
    shown_systems = top + [s for s in payload["systems"] if s["name"] == baseline and s not in top]
    if len(ks) < 2 or not shown_systems:
        return ""
    charts = "".join(_line_chart(metric, ks, shown_systems) for metric in ("recall", "mrr"))
    legend = "".join(f"<li><span class=\"swatch\" style=\"background:{PALETTE[i % len(PALETTE)]}\"></span>"
                     f"{_e(s['name'])}</li>" for i, s in enumerate(shown_systems))
    return f"<div class=\"charts\">{charts}</div><ul class=\"legend\">{legend}</ul>"


def _line_chart(metric: str, ks: Sequence[int], systems: Sequence[dict[str, Any]]) -> str:
    left, top, width, height = 36, 10, 250, 150
    lo_k, hi_k = min(ks), max(ks)
    x = lambda k: left + width * (k - lo_k) / ((hi_k - lo_k) or 1)  # noqa: E731
    y = lambda v: top + height * (1 - v)  # noqa: E731
    parts = []
    for tick in (0.0, 0.5, 1.0):
        parts.append(f"<line x1=\"{left}\" x2=\"{left + width}\" y1=\"{y(tick):.1f}\" y2=\"{y(tick):.1f}\" "
                     f"class=\"grid\"/><text x=\"{left - 4}\" y=\"{y(tick) + 4:.1f}\" text-anchor=\"end\" "
                     f"class=\"tick\">{tick:g}</text>")
    parts += [f"<text x=\"{x(k):.1f}\" y=\"{top + height + 16}\" text-anchor=\"middle\" class=\"tick\">{k}</text>"
              for k in ks]
    for i, system in enumerate(systems):
        points = [(k, _finite(system["metrics"].get(f"{metric}@{k}"))) for k in ks]
        points = [(k, v) for k, v in points if v is not None]
        color = PALETTE[i % len(PALETTE)]
        path = " ".join(f"{x(k):.1f},{y(v):.1f}" for k, v in points)
        parts.append(f"<polyline points=\"{path}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>"
                     + "".join(f"<circle cx=\"{x(k):.1f}\" cy=\"{y(v):.1f}\" r=\"3\" fill=\"{color}\">"
                               f"<title>{_e(system['name'])} {metric}@{k} = {v:.3f}</title></circle>"
                               for k, v in points))
    return (f"<figure><svg class=\"kchart\" viewBox=\"0 0 {left + width + 10} {top + height + 24}\" role=\"img\" "
            f"aria-label=\"{metric}@k\">{''.join(parts)}</svg><figcaption>{metric}@k against k</figcaption></figure>")


# ---------------------------------------------------------------------------- fusion and audit


def fusion_table(payload: dict[str, Any]) -> str:
    """Each hybrid's dense weight and each fused reranker's weight, their depth, and where they came from."""
    rows = []
    for system in payload["systems"]:
        info = system.get("info") or {}
        for what, weight, depth, source in (
                ("dense weight", info.get("dense_weight"), info.get("fusion_depth"), info.get("weight_from")),
                ("reranker weight", info.get("reranker_weight"), info.get("reranker_fusion_depth"),
                 info.get("reranker_weight_from"))):
            if weight is None:
                continue
            choice = info.get("weight_choice" if what == "dense weight" else "reranker_weight_choice") or {}
            how = (f" by rule {_e(choice['rule'])} on {choice.get('chosen_on_queries')} queries "
                   f"({_e(choice.get('metric'))} {_fmt(choice.get('chosen_value'))})" if choice.get("rule") else "")
            rows.append(f"<tr><th class=\"name\" scope=\"row\">{_e(system['name'])}</th><td>{what}</td>"
                        f"<td class=\"num\">{weight:g}</td><td class=\"num\">{_e(depth)}</td>"
                        f"<td>{_e(SOURCES.get(source, source))}{how}</td></tr>")
    if not rows:
        return "<p>No weighted fusion in this evaluation.</p>"
    return ("<div class=\"scroll\"><table id=\"fusion-table\"><thead><tr><th class=\"name\">system</th><th>weight of"
            "</th><th>value</th><th>depth</th><th>from</th></tr></thead><tbody>" + "".join(rows)
            + "</tbody></table></div><p class=\"small\">Never chosen on the test queries.</p>")


SOURCES = {"metrics.json": "the model's metrics.json (chosen on its training dev split)",
           "train_data": "chosen here on --train_data", "default": "default 0.5 (nothing to choose it on)"}


def audit_list(payload: dict[str, Any]) -> str:
    """What the data audit found, counts only (values are in --audit_report, masked)."""
    audit = payload.get("data_audit")
    if not audit:
        return "<p>No data audit in this evaluation.</p>"
    leakage, dups = audit["leakage"], audit["duplicate_passages"]
    pii = pii_summary_line(audit["pii"], "redacted in the copy evaluated")
    items = [f"Personal information in corpus and queries: {_code_spans(pii)}.",
             (f"Leakage: {leakage['leaked_test_queries']} of {leakage['test_queries']} test queries have a near-copy "
              "in --train_data." if payload["config"].get("train_data") else
              "Leakage: not checked (no --train_data)."),
             f"Duplicate passages: {dups['groups']} group(s), {dups['passages']} passages; "
             f"{dups['queries_with_unlabelled_twin']} test queries have an unlabelled twin of a gold passage.",
             f"Query texts with conflicting labels: {audit['conflicting_labels']}."]
    return "<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>"


# ---------------------------------------------------------------------------- static parts: style, drill-down, script

CSS = """
:root{--fg:#1b1b1b;--muted:#666;--line:#ddd;--hit:#e3f4e1;--win:#2e7d32;--base:#757575}
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg)}
main{max-width:1440px;margin:auto;padding:12px}h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.15em;margin-top:1.6em;
border-bottom:1px solid var(--line)}nav{display:inline}code{font-size:.9em;word-break:break-all}.small{font-size:.85em;color:var(--muted)}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:.9em}th,td{padding:4px 8px;border-bottom:1px solid
var(--line);vertical-align:top}thead th{background:#f6f6f6;position:sticky;top:0;text-align:right}th.name{text-align:left;
position:sticky;left:0;background:#fff;min-width:12em;max-width:22em;font-weight:600}thead th.name{background:#f6f6f6}
td.num{text-align:right;white-space:nowrap}.ci{display:block;font-size:.75em;color:var(--muted)}td.main{font-weight:700}
tr.winner th.name,tr.winner td{background:#eef7ee}tr.baseline th.name{font-style:italic}.kind{font-size:.75em;
color:var(--muted);font-weight:400}.badge{font-size:.7em;padding:1px 5px;border-radius:8px;color:#fff;margin-left:3px;
vertical-align:middle}.badge.win{background:var(--win)}.badge.base{background:var(--base)}.sig{color:var(--win)}
figure{margin:8px 0}svg{width:100%;height:auto;max-width:640px}.kchart{max-width:320px}.charts{display:flex;flex-wrap:wrap;
gap:12px}.lbl,.val,.tick{font-size:11px;fill:#333}.grid{stroke:#e5e5e5}.err{stroke:#111;stroke-width:1.3}
figcaption{font-size:.85em;color:var(--muted)}.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:4px 14px;
font-size:.85em}.swatch{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}
.controls{display:flex;flex-wrap:wrap;gap:6px 16px;align-items:center;margin:6px 0}.controls fieldset{border:1px solid
var(--line);padding:4px 8px;min-width:0}.controls>*{min-width:0;max-width:100%}.controls label{overflow-wrap:anywhere}
select{max-width:100%}
input[type=search]{padding:4px;min-width:min(14em,100%)}#main-chart{min-width:560px}
details.query{border:1px solid var(--line);border-radius:6px;margin:6px 0;padding:4px 8px}details.query>summary{cursor:
pointer}.flag{font-size:.72em;background:#fbe9e7;color:#b71c1c;border-radius:8px;padding:1px 6px;margin-left:4px}
.cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:10px;margin:8px 0}.col{border:1px solid
var(--line);border-radius:6px;padding:6px}.col h4{margin:0 0 4px;font-size:.9em}ol.passages{padding-left:0;margin:0;
list-style:none}ol.passages li{border-top:1px solid #eee;padding:3px 0}li.hit{background:var(--hit)}.pid{font-weight:600}
.score{color:var(--muted);font-size:.8em}.ptext{font-size:.85em;max-height:6.5em;overflow:auto;white-space:pre-wrap;
overflow-wrap:anywhere}
.gold-passage{background:var(--hit);border-radius:4px;padding:4px;margin:4px 0}.answer{white-space:pre-wrap;font-size:.9em;overflow-wrap:anywhere}
@media (max-width:600px){body{font-size:14px}th.name{min-width:9em}}
@media print{.controls{display:none}details.query{break-inside:avoid}thead th,th.name{position:static}a{color:inherit}}
"""

DRILLDOWN_SHELL = """
<div class="controls">
<input type="search" id="q-search" placeholder="search queries" aria-label="search queries">
<label><input type="checkbox" id="f-miss"> every system misses</label>
<label><input type="checkbox" id="f-loses"> <select id="f-system" aria-label="system"></select> loses to the
baseline</label>
<span id="q-count" class="small"></span>
</div>
<fieldset class="controls" id="system-picker"><legend class="small">systems shown</legend></fieldset>
<div id="query-list"></div>
<noscript><p>The per-query drill-down needs JavaScript; results.json and per_query.csv hold the same data.</p></noscript>
"""

SCRIPT = r"""
(function(){
const D=JSON.parse(document.getElementById('drilldown-data').textContent);
const S=D.systems, B=S.indexOf(D.baseline), W=Math.max(0,S.indexOf(D.winner));
const shown=new Set([W]); if(B>=0) shown.add(B); if(shown.size<2&&S.length>1) shown.add(W===0?1:0);
const el=(tag,cls,text)=>{const e=document.createElement(tag); if(cls) e.className=cls;
  if(text!==undefined&&text!==null) e.textContent=String(text); return e;};
const fmt=v=>v===null||v===undefined?'n/a':Number(v).toFixed(3);
const picker=document.getElementById('system-picker'), sel=document.getElementById('f-system');
const rival=S.findIndex((n,i)=>i!==B); // the best system that is not the baseline
S.forEach((name,i)=>{const l=el('label'); const c=el('input'); c.type='checkbox'; c.checked=shown.has(i);
  c.dataset.system=name; c.addEventListener('change',()=>{c.checked?shown.add(i):shown.delete(i); redraw();});
  l.append(c,' '+name); picker.append(l,' ');
  if(i!==B){const o=el('option',null,name); o.value=i; if(i===rival) o.selected=true; sel.append(o);}});
function loses(q){const i=Number(sel.value); if(B<0||isNaN(i)) return false;
  const a=q.main[i], b=q.main[B]; return a!==null&&b!==null&&a<b;}
function body(q){
  const box=el('div'); const gold=el('div'); gold.append(el('h4',null,'Gold passages'));
  q.gold.forEach(id=>{const g=el('div','gold-passage'); g.dataset.pid=id; g.append(el('span','pid',id+' '),
    el('div','ptext',D.passages[id]||'(not in the corpus)')); gold.append(g);});
  box.append(gold);
  const cols=el('div','cols');
  [...shown].sort((a,b)=>a-b).forEach(i=>{const col=el('div','col'); col.dataset.system=S[i];
    col.append(el('h4',null,S[i]+' · '+D.main+' '+fmt(q.main[i])));
    const ol=el('ol','passages');
    q.runs[i].forEach(([id,score],r)=>{const hit=q.gold.includes(id); const li=el('li',hit?'hit':'');
      li.dataset.pid=id; li.append(el('span',null,(r+1)+'. '),el('span','pid',(hit?'✓ ':'')+id),
        el('span','score',' score '+(score===null?'–':Number(score).toFixed(4))),el('div','ptext',D.passages[id]));
      ol.append(li);});
    col.append(ol); cols.append(col);});
  box.append(el('h4',null,'Retrieved (top '+D.depth+'; ✓ gold)'),cols);
  const ans=el('div','cols answers');
  const ref=el('div','col'); ref.append(el('h4',null,'Reference answer'),el('div','answer reference',q.reference||'(none)'));
  ans.append(ref); let any=false;
  [...shown].sort((a,b)=>a-b).forEach(i=>{Object.entries(q.answers[i]||{}).forEach(([k,text])=>{any=true;
    const c=el('div','col'); c.dataset.system=S[i];
    c.append(el('h4',null,S[i]+' (top '+k+')'),el('div','answer generated',text)); ans.append(c);});});
  if(any) box.append(el('h4',null,'Answers'),ans);
  return box;}
const list=document.getElementById('query-list'), items=[];
D.queries.forEach(q=>{const d=el('details','query'); d.dataset.row=q.row; const s=el('summary');
  s.append(el('span','small','row '+q.row+' '),el('span','qtext',q.text));
  if(q.all_miss) s.append(el('span','flag miss','every system misses'));
  const lose=el('span','flag lose','loses to baseline'); s.append(lose);
  d.append(s); d.addEventListener('toggle',()=>{if(d.open&&!d.dataset.drawn){d.append(body(q)); d.dataset.drawn=1;}});
  list.append(d); items.push({q,d,lose});});
function redraw(){items.forEach(({q,d})=>{if(d.dataset.drawn){d.lastChild.remove(); delete d.dataset.drawn;
  if(d.open){d.append(body(q)); d.dataset.drawn=1;}}}); filter();}
function filter(){const text=document.getElementById('q-search').value.toLowerCase();
  const miss=document.getElementById('f-miss').checked, lo=document.getElementById('f-loses').checked; let n=0;
  items.forEach(({q,d,lose})=>{const l=loses(q); lose.hidden=!l;
    const ok=(!miss||q.all_miss)&&(!lo||l)&&(!text||q.text.toLowerCase().includes(text)||String(q.row)===text);
    d.hidden=!ok; if(ok) n++;});
  document.getElementById('q-count').textContent=n+' of '+items.length+' queries';}
['q-search','f-miss','f-loses','f-system'].forEach(id=>document.getElementById(id).addEventListener('input',filter));
document.getElementById('f-system').addEventListener('change',filter);
filter();
window.addEventListener('beforeprint',()=>items.forEach(({q,d})=>{if(d.hidden) return;
  if(!d.dataset.drawn){d.append(body(q)); d.dataset.drawn=1;} d.open=true;}));
})();
"""

"""Evaluation reports: results.json, results.md, a PNG chart, per_query.csv, answers.csv."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Sequence

from .metrics import RANKING_METRICS

# Row order of the tables: ranking metrics, context metrics, LLM context metrics, answer metrics.
METRIC_ORDER = (*RANKING_METRICS, "context_precision", "context_recall", "llm_context_precision", "llm_context_recall",
                "llm_context_entities_recall", "string_presence", "rouge_l", "bleu4", "groundedness",
                "response_relevancy", "noise_sensitivity")
CHART_METRICS = ("hit", "recall", "precision", "map", "mrr", "ndcg", "context_precision", "llm_context_precision",
                 "llm_context_recall")
LOWER_IS_BETTER = {"noise_sensitivity"}


def split_key(key: str) -> tuple[str, int | None]:
    name, _, k = key.partition("@")
    return name, int(k) if k.isdigit() else None


def metric_names(systems: Sequence[dict[str, Any]]) -> list[str]:
    present = {split_key(key)[0] for s in systems for key in s["metrics"]}
    return [m for m in METRIC_ORDER if m in present] + sorted(present - set(METRIC_ORDER))


def metric_ks(systems: Sequence[dict[str, Any]]) -> list[int]:
    return sorted({k for s in systems for key in s["metrics"] for k in [split_key(key)[1]] if k is not None})


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def fmt_delta(value: Any, base: Any) -> str:
    if value is None or base is None:
        return ""
    delta = value - base
    return f"{delta:+.4f}"


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align_first_left: bool = True) -> str:
    sep = [":---" if i == 0 and align_first_left else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def system_table(system: dict[str, Any], names: Sequence[str], ks: Sequence[int]) -> str:
    """Metric rows x k columns for one system (a metric without a value at some k shows '')."""
    metrics = system["metrics"]
    rows = []
    for name in names:
        cells = [fmt(metrics[f"{name}@{k}"]) if f"{name}@{k}" in metrics else "" for k in ks]
        if any(cells):
            rows.append([name + (" (lower is better)" if name in LOWER_IS_BETTER else "")] + cells)
    return _md_table(["metric"] + [f"@{k}" for k in ks], rows)


def comparison_table(systems: Sequence[dict[str, Any]], baseline: str, keys: Sequence[str]) -> str:
    """Metric@k rows x system columns; every system but the baseline shows its delta against it."""
    base = next((s for s in systems if s["name"] == baseline), None)
    headers = ["metric"] + [s["name"] + (" (base)" if s["name"] == baseline else "") for s in systems]
    rows = []
    for key in keys:
        if not any(key in s["metrics"] for s in systems):
            continue
        row = [key]
        for s in systems:
            value = s["metrics"].get(key)
            cell = fmt(value) if key in s["metrics"] else ""
            if base is not None and s is not base and key in s["metrics"]:
                delta = fmt_delta(value, base["metrics"].get(key))
                cell += f" ({delta})" if delta else ""
            row.append(cell)
        rows.append(row)
    return _md_table(headers, rows)


def results_markdown(payload: dict[str, Any], baseline: str | None) -> str:
    systems = payload["systems"]
    config = payload["config"]
    names, ks = metric_names(systems), metric_ks(systems)
    out = ["# Retrieval evaluation", ""]
    out.append(f"Corpus `{config['corpus']['path']}` ({config['corpus']['passages']} passages), test queries "
               f"`{config['test_data']['path']}` ({config['test_data']['queries']} queries), k = "
               f"{', '.join(map(str, config['k']))}. Main metric: `{config['main_metric']}`.")
    out.append("")
    note = ("Ranking metrics use trec_eval's definitions (binary relevance); context precision/recall are ID-based "
            "(the labels are the verdicts).")
    if payload.get("judge"):
        note += f" `llm_` metrics are judged by `{payload['judge']['model']}`."
    if payload.get("generator"):
        note += (f" Answer metrics: answers by `{payload['generator']['model']}` from each system's top "
                 f"{', '.join(map(str, payload['generator']['answer_k']))} passages; noise_sensitivity: lower is "
                 "better.")
    out.append(note + " `n/a`: no query could be scored.")
    out.append("")
    for system in systems:
        out.append(f"## {system['name']}")
        out.append("")
        parts = []
        if system.get("embedding_model"):
            parts.append(f"embedding model `{system['embedding_model']}`")
        if system.get("reranker_model"):
            parts.append(f"reranker `{system['reranker_model']}` on the top {system['info'].get('rerank_top_n')}")
        if parts:
            out.append(", ".join(parts).capitalize() + ".")
            out.append("")
        out.append(system_table(system, names, ks))
        if system.get("excluded"):
            out.append("")
            out.append("Queries left out of a mean (judge failure, or nothing to score): " + ", ".join(
                f"{k}: {v}" for k, v in sorted(system["excluded"].items())) + ".")
        out.append("")
    if baseline and len(systems) > 1:
        keys = [f"{name}@{k}" for name in names for k in ks]
        out.append(f"## Comparison (delta against `{baseline}`)")
        out.append("")
        out.append(comparison_table(systems, baseline, keys))
        out.append("")
    judge = payload.get("judge")
    if judge:
        out.append("## Judge")
        out.append("")
        out.append(f"Model `{judge['model']}`: {judge['judgements']} judgements, {judge['retried']} retried after a "
                   f"malformed answer, {judge['failures']} still malformed (left out, never scored 0); "
                   f"{judge['requests']} requests sent, {judge['cache_hits']} answers from the cache.")
        out.append("")
    return "\n".join(out)


def card_markdown(systems: Sequence[dict[str, Any]], baseline: str | None, keys: Sequence[str]) -> str:
    """Compact comparison for a model card: the chosen system against its baseline."""
    return comparison_table(systems, baseline or "", keys)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=_json_default), encoding="utf-8")
    tmp.replace(path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def plot_chart(path: Path, systems: Sequence[dict[str, Any]], k: int) -> Path:
    """Grouped bars: the main metrics at ``k`` for every system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [m for m in CHART_METRICS if any(s["metrics"].get(f"{m}@{k}") is not None for s in systems)]
    width = 0.8 / max(1, len(systems))
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(names) + 0.4 * len(systems)), 4.8))
    x = np.arange(len(names))
    for i, system in enumerate(systems):
        values = [system["metrics"].get(f"{m}@{k}") or 0.0 for m in names]
        bars = ax.bar(x + (i - (len(systems) - 1) / 2) * width, values, width, label=system["name"])
        if len(systems) <= 6:
            ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=6, rotation=90, padding=2)
    ax.set_xticks(x, [f"{m}@{k}" for m in names], rotation=20, ha="right")
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("score")
    ax.set_title(f"Retrieval metrics at k={k}")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_per_query_csv(path: Path, queries: Sequence[Any], systems: Sequence[Any], corpus: Any, depth: int) -> None:
    """One row per query: labels, then per system its top ``depth`` ids and the rank of its first hit.

    The first-hit rank is searched in the whole retrieved list (which may be deeper than ``depth``);
    empty when no relevant passage was retrieved. UTF-8 with a BOM so that spreadsheets show
    Vietnamese text correctly.
    """
    headers = ["row", "query", "difficulty", "relevant_ids"]
    for system in systems:
        headers += [f"{system.name} | retrieved_ids", f"{system.name} | first_hit_rank"]
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    with open(tmp, "w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(headers)
        for qi, query in enumerate(queries):
            row = [query.row, query.query, query.difficulty, " ".join(query.relevant_ids)]
            relevant = set(query.relevant_ids)
            for system in systems:
                ids = system.ranked_ids(corpus, qi)
                first = next((rank for rank, pid in enumerate(ids, start=1) if pid in relevant), None)
                row += [" ".join(ids[:depth]), "" if first is None else first]
            writer.writerow(row)
    tmp.replace(path)


def write_answers_csv(path: Path, records: Sequence[dict[str, Any]]) -> None:
    if not records:
        return
    headers: list[str] = []
    for record in records:
        headers += [key for key in record if key not in headers]
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    with open(tmp, "w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=headers)
        writer.writeheader()
        for record in records:
            writer.writerow({k: ("" if v is None else v) for k, v in record.items()})
    tmp.replace(path)


def console_table(systems: Sequence[dict[str, Any]], k: int, names: Sequence[str] = ("hit", "recall", "precision",
                                                                                      "map", "mrr", "ndcg")) -> str:
    headers = ["system"] + [f"{n}@{k}" for n in names]
    rows = [[s["name"]] + [fmt(s["metrics"].get(f"{n}@{k}")) for n in names] for s in systems]
    widths = [max(len(str(r[i])) for r in rows + [headers]) for i in range(len(headers))]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])

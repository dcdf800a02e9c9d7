"""Evaluation reports: results.json, results.md, a PNG chart, per_query.csv, answers.csv, results.html.

:class:`Report` holds everything evaluate_rag.py has computed so far; ``write`` rewrites every file
from it, so the reports are complete after each stage (retrieval, judge, answers, publishing) and
a later failure never loses an earlier stage's numbers. Every text in them goes through
:func:`ragtune.core.redaction.shown`: queries, references, answers and judge replies show personal values masked
under ``--pii warn``, and no secret.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import math
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Sequence

import numpy as np

from ragtune import __version__
from ragtune.audit.report import pii_summary_line
from ragtune.core.io import write_json, write_text
from ragtune.core.metrics import RANKING_METRICS, first_hit_rank, split_metric_key
from ragtune.core.redaction import redact_config, shown, shown_in
from ragtune.core.significance import compare, holm_adjust
from ragtune.evaluate.html_report import HTML_FILE, write_results_html

# Row order of the tables: ranking metrics, context metrics, LLM context metrics, answer metrics.
METRIC_ORDER = (*RANKING_METRICS, "context_precision", "context_recall", "llm_context_precision", "llm_context_recall",
                "llm_context_entities_recall", "string_presence", "rouge_l", "bleu4", "groundedness",
                "response_relevancy", "noise_sensitivity")
CHART_METRICS = ("hit", "recall", "precision", "map", "mrr", "ndcg", "context_precision", "llm_context_precision",
                 "llm_context_recall")
LOWER_IS_BETTER = {"noise_sensitivity"}


def metric_names(systems: Sequence[dict[str, Any]]) -> list[str]:
    present = {split_metric_key(key)[0] for s in systems for key in s["metrics"]}
    return [m for m in METRIC_ORDER if m in present] + sorted(present - set(METRIC_ORDER))


def metric_ks(systems: Sequence[dict[str, Any]]) -> list[int]:
    return sorted({k for s in systems for key in s["metrics"] for k in [split_metric_key(key)[1]] if k is not None})


def metric_keys(systems: Sequence[dict[str, Any]]) -> list[str]:
    """Every metric@k of these systems, in table order (metric by metric, k ascending)."""
    ks = metric_ks(systems)
    return [f"{name}@{k}" for name in metric_names(systems) for k in ks]


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def fmt_delta(value: Any, base: Any) -> str:
    if value is None or base is None:
        return ""
    delta = value - base
    return f"{delta:+.4f}"


def fmt_with_delta(value: Any, base: Any) -> str:
    """``0.8123 (+0.0512)``: the value, and its change from ``base`` when both are known."""
    delta = fmt_delta(value, base)
    return fmt(value) + (f" ({delta})" if delta else "")


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


def metric_by_system_table(systems: Sequence[dict[str, Any]], keys: Sequence[str], headers: Sequence[str],
                           cell: Callable[[dict[str, Any], str], str]) -> str:
    """Metric@k rows x system columns, for the keys some system has; a system without the key shows ''."""
    rows = [[key] + [cell(s, key) if key in s["metrics"] else "" for s in systems]
            for key in keys if any(key in s["metrics"] for s in systems)]
    return _md_table(["metric", *headers], rows)


def comparison_table(systems: Sequence[dict[str, Any]], baseline: str, keys: Sequence[str]) -> str:
    """Metric@k rows x system columns; every system but the baseline shows its delta against it."""
    base = next((s for s in systems if s["name"] == baseline), None)

    def cell(s: dict[str, Any], key: str) -> str:
        reference = base["metrics"].get(key) if base is not None and s is not base else None
        return fmt_with_delta(s["metrics"].get(key), reference)

    headers = [s["name"] + (" (base)" if s["name"] == baseline else "") for s in systems]
    return metric_by_system_table(systems, keys, headers, cell)


def fmt_p(p: float) -> str:
    """p=0.032, or p<0.001 (the smallest p the test can give is 1 / (resamples + 1), not 0)."""
    return f"p={p:.3f}" if p >= 0.001 else "p<0.001"


def fmt_significance(entry: dict[str, Any]) -> str:
    """``+0.0512 [-0.0100, +0.1100] p=0.032*``: mean difference, CI, p-value, ``*`` when p < 0.05."""
    return (f"{entry['mean_difference']:+.4f} [{entry['ci_low']:+.4f}, {entry['ci_high']:+.4f}] "
            f"{fmt_p(entry['p_value'])}" + ("*" if entry["significant"] else ""))


def fmt_holm(entry: dict[str, Any]) -> str:
    """``p=0.064``: the Holm-corrected p-value, ``*`` when it stays below 0.05."""
    return fmt_p(entry["p_holm"]) + ("*" if entry["p_holm"] < 0.05 else "")


def with_holm(significance: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each entry with ``p_holm``: its p-value Holm-corrected across every system compared with the baseline (with
    one comparison, the p-value itself), so that "p < 0.05" keeps its meaning when many systems are tried."""
    names = list(significance)
    adjusted = holm_adjust([float(significance[name]["p_value"]) for name in names])
    return {name: {**significance[name], "p_holm": p} for name, p in zip(names, adjusted)}


def significance_markdown(payload: dict[str, Any], baseline: str) -> list[str]:
    """results.md: every system's main metric with its paired difference against the baseline."""
    significance = payload["significance"]
    metric = payload["config"]["main_metric"]
    first = next(iter(significance.values()))
    several = int(len(significance) > 1 and all("p_holm" in e for e in significance.values()))
    rows = []
    for s in payload["systems"]:
        value = fmt(s["metrics"].get(metric))
        if s["name"] == baseline:
            rows.append([s["name"] + " (base)", value, ""] + [""] * several)
        elif s["name"] in significance:
            entry = significance[s["name"]]
            rows.append([s["name"], value, fmt_significance(entry)] + [fmt_holm(entry)] * several)
    holm_note = (f" p (Holm): corrected for the {len(significance)} systems compared with `{baseline}` (`*`: < 0.05 "
                 "after correction)." if several else "")
    return [f"`{metric}` against `{baseline}` on the same {first['queries']} queries. Δ: mean paired difference; "
            f"[95% CI]: percentile bootstrap over queries ({first['resamples']} resamples); p: two-sided paired "
            "randomisation test; `*`: p < 0.05. On a few dozen queries a difference without `*` may be noise."
            + holm_note + (f" **Caution, {first['caveat']}.**" if first.get("caveat") else ""), "",
            _md_table(["system", metric, "Δ [95% CI] p"] + ["p (Holm)"] * several, rows), ""]


def results_markdown(payload: dict[str, Any], baseline: str | None) -> str:
    systems = payload["systems"]
    names, ks = metric_names(systems), metric_ks(systems)
    out = ["# Retrieval evaluation", "", *_introduction(payload)]
    for system in systems:
        out += system_markdown(system, names, ks)
    if baseline and len(systems) > 1:
        out += [f"## Comparison (delta against `{baseline}`)", ""]
        if payload.get("significance"):
            out += significance_markdown(payload, baseline)
        out += [comparison_table(systems, baseline, metric_keys(systems)), ""]
    if payload.get("leaked_test_queries"):
        out += leakage_markdown(payload)
    if payload.get("data_audit"):
        out += audit_markdown(payload)
    if payload.get("judge"):
        out += judge_markdown(payload["judge"])
    return "\n".join(out)


def _introduction(payload: dict[str, Any]) -> list[str]:
    """results.md's first lines: what was evaluated, and how to read the metrics."""
    config = payload["config"]
    what = (f"Corpus `{config['corpus']['path']}` ({config['corpus']['passages']} passages), test queries "
            f"`{config['test_data']['path']}` ({config['test_data']['queries']} queries), k = "
            f"{', '.join(map(str, config['k']))}. Main metric: `{config['main_metric']}`.")
    note = ("Ranking metrics use trec_eval's definitions (binary relevance); context precision/recall are ID-based "
            "(the labels are the verdicts).")
    if payload.get("judge"):
        note += f" `llm_` metrics are judged by `{payload['judge']['model']}`."
    if payload.get("generator"):
        note += (f" Answer metrics: answers by `{payload['generator']['model']}` from each system's top "
                 f"{', '.join(map(str, payload['generator']['answer_k']))} passages; noise_sensitivity: lower is "
                 "better.")
    return [what, "", note + " `n/a`: no query could be scored.", ""]


def system_markdown(system: dict[str, Any], names: Sequence[str], ks: Sequence[int]) -> list[str]:
    """results.md section of one system: its models, its metric table, the queries left out of a mean."""
    out = [f"## {system['name']}", ""]
    parts = []
    if system.get("embedding_model"):
        parts.append(f"embedding model `{system['embedding_model']}`")
    if system.get("reranker_model"):
        parts.append(f"reranker `{system['reranker_model']}` on the top {system['info'].get('rerank_top_n')}")
    if parts:
        out += [", ".join(parts).capitalize() + ".", ""]
    out.append(system_table(system, names, ks))
    if system.get("excluded"):
        out += ["", "Queries left out of a mean (judge failure, or nothing to score): " + ", ".join(
            f"{k}: {v}" for k, v in sorted(system["excluded"].items())) + "."]
    return out + [""]


def judge_markdown(judge: dict[str, Any]) -> list[str]:
    """results.md section: how many judgements, retries, failures and requests the judge took."""
    return ["## Judge", "",
            f"Model `{judge['model']}`: {judge['judgements']} judgements, {judge['retried']} retried after a "
            f"malformed answer, {judge['failures']} still malformed (left out, never scored 0); "
            f"{judge['requests']} requests sent, {judge['cache_hits']} answers from the cache.", ""]


def metrics_without(per_query: Sequence[dict[str, Any]], keys: Sequence[str], left_out: set[int]) -> dict[str, Any]:
    """Each metric's mean over the queries not in ``left_out``, from the per-query values already computed.

    Same rule as the full means: a None (not scored) is left out of its mean, and a metric with no value
    left is None. A key with no per-query values at all (corpus-level BLEU) is None: it is not recomputed.
    """
    kept = [row for i, row in enumerate(per_query) if i not in left_out]
    out: dict[str, Any] = {}
    for key in keys:
        values = [row[key] for row in kept if row.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None  # as mean_metrics / add_per_query_metrics
    return out


def leakage_markdown(payload: dict[str, Any]) -> list[str]:
    """results.md section: every system's metrics without the leaked test queries, and the change."""
    leaked = payload["leaked_test_queries"]
    systems = payload["systems"]
    n, kept = leaked["count"], leaked["queries_kept"]
    threshold = payload.get("data_audit", {}).get("leakage", {}).get("threshold")
    rows = ", ".join(map(str, leaked["rows"][:20])) + (" ..." if len(leaked["rows"]) > 20 else "")
    out = [f"## Without the {n} leaked test {'query' if n == 1 else 'queries'}", "",
           f"{n} of {n + kept} test queries (rows {rows}) have a near-copy among the `--train_data` queries "
           f"(Jaccard >= {threshold} on case-, accent- and punctuation-folded word sets): a model trained on them "
           f"has seen the answer. Below, every metric over the other {kept} queries; in brackets the change against "
           "all queries.", ""]
    table = metric_by_system_table(systems, metric_keys(systems), [s["name"] for s in systems],
                                   lambda s, key: fmt_with_delta(s["metrics_without_leaked"].get(key),
                                                                 s["metrics"].get(key)))
    return out + [table, ""]


def audit_markdown(payload: dict[str, Any]) -> list[str]:
    """results.md section: what the data audit found (counts only; values are in --audit_report, masked)."""
    audit = payload["data_audit"]
    pii, leakage, dups = audit["pii"], audit["leakage"], audit["duplicate_passages"]
    pii_line = pii_summary_line(pii, "redacted in the copy evaluated")
    leak_line = (f"{leakage['leaked_test_queries']} of {leakage['test_queries']} test queries have a near-copy in "
                 f"`--train_data` ({leakage['pairs']} pair(s), {leakage['exact_pairs']} identical up to case, accents "
                 "and word order)")
    return ["## Data audit", "",
            f"- Personal information in corpus and queries: {pii_line}.",
            f"- Leakage: {leak_line}." if payload["config"].get("train_data") else
            "- Leakage: not checked (no `--train_data`).",
            f"- Duplicate passages: {dups['groups']} group(s), {dups['passages']} passages; "
            f"{dups['queries_with_unlabelled_twin']} labelled test quer(ies) have an unlabelled twin (a relevant "
            "passage counted as a miss).",
            f"- Query texts with conflicting labels: {audit['conflicting_labels']}.", ""]


def card_markdown(systems: Sequence[dict[str, Any]], baseline: str | None, keys: Sequence[str]) -> str:
    """Compact comparison for a model card: the chosen system against its baseline."""
    return comparison_table(systems, baseline or "", keys)


def plot_chart(path: Path, systems: Sequence[dict[str, Any]], k: int) -> Path:
    """Grouped bars: the main metrics at ``k`` for every system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    with _spreadsheet_csv(path) as handle:
        writer = csv.writer(handle)
        writer.writerow(headers)
        for qi, query in enumerate(queries):
            row = [query.row, shown(query.query), query.difficulty, " ".join(query.relevant_ids)]
            for system in systems:
                ids = system.ranked_ids(corpus, qi)
                first = first_hit_rank(ids, query.relevant_ids)
                row += [" ".join(ids[:depth]), "" if first is None else first]
            writer.writerow(row)


def write_answers_csv(path: Path, records: Sequence[dict[str, Any]]) -> None:
    if not records:
        return
    headers: list[str] = []
    for record in records:
        headers += [key for key in record if key not in headers]
    with _spreadsheet_csv(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=headers)
        writer.writeheader()
        for record in records:
            writer.writerow({k: "" if v is None else shown(v) if isinstance(v, str) else v
                             for k, v in record.items()})


@contextmanager
def _spreadsheet_csv(path: Path) -> Iterator[IO[str]]:
    """A CSV file for spreadsheets (UTF-8 with a BOM), written to ``<name>.tmp`` and renamed over ``path`` when
    complete, as :mod:`ragtune.core.io` writes the other reports."""
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    with open(tmp, "w", encoding="utf-8-sig", newline="") as handle:
        yield handle
    tmp.replace(path)


def console_table(systems: Sequence[dict[str, Any]], k: int, names: Sequence[str] = ("hit", "recall", "precision",
                                                                                      "map", "mrr", "ndcg"),
                  significance: dict[str, dict[str, Any]] | None = None, baseline: str | None = None,
                  main_metric: str | None = None) -> str:
    """One row per system, best first on ``main_metric`` (the winner and the baseline marked), the answer and judge
    metrics as columns when they were computed; with ``significance``, a last column: the difference against the
    baseline on the main metric, its p-value (Holm-corrected when several systems are compared), ``*`` below 0.05."""
    if main_metric:
        systems = ranked_by(systems, main_metric)
    keys = [f"{n}@{k}" for n in names] + llm_metric_keys(systems)
    headers = ["system", ""] + keys
    winner = systems[0]["name"] if main_metric and systems else None
    rows = [[s["name"], ", ".join(mark for mark, on in (("winner", s["name"] == winner),
                                                         ("baseline", s["name"] == baseline)) if on)]
            + [fmt(s["metrics"].get(key)) for key in keys] for s in systems]
    holm = bool(significance) and len(significance) > 1 and all("p_holm" in e for e in significance.values())
    if significance:
        metric = next(iter(significance.values()))["metric"]
        headers.append(f"Δ {metric} (p)")
        for row, s in zip(rows, systems):
            entry = significance.get(s["name"])
            p = None if entry is None else entry["p_holm"] if holm else entry["p_value"]
            row.append("base" if s["name"] == baseline else "" if entry is None else
                       f"{entry['mean_difference']:+.4f} ({fmt_p(p)})" + ("*" if p < 0.05 else ""))
    widths = [max(len(str(r[i])) for r in rows + [headers]) for i in range(len(headers))]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    table = "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])
    if significance:
        corrected = f"Holm-corrected over the {len(significance)} systems compared; " if holm else ""
        table += (f"\n* p < 0.05 against {baseline} (paired randomisation test; {corrected}95% CIs in results.md): "
                  "differences without * may be noise on this many queries.")
        caveat = next(iter(significance.values())).get("caveat")
        table += f"\nCaution, {caveat}." if caveat else ""
    return table


def ranked_by(systems: Sequence[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Best first on ``metric`` (lowest first for a lower-is-better one); systems without it last, in their order."""
    sign = 1 if split_metric_key(metric)[0] in LOWER_IS_BETTER else -1
    return sorted(systems, key=lambda s: (s["metrics"].get(metric) is None, sign * (s["metrics"].get(metric) or 0)))


def llm_metric_keys(systems: Sequence[dict[str, Any]]) -> list[str]:
    """The LLM-judged context metrics and the answer metrics any system has (``rouge_l@5``...), in report order."""
    llm_names = METRIC_ORDER[METRIC_ORDER.index("llm_context_precision"):]
    present = {key for s in systems for key, value in s["metrics"].items() if value is not None}
    keyed = [(llm_names.index(split_metric_key(key)[0]), split_metric_key(key)[1] or 0, key) for key in present
             if split_metric_key(key)[0] in llm_names]
    return [key for _, _, key in sorted(keyed)]


class Report:
    """What evaluate_rag.py has computed so far; ``write`` rewrites every report file from it."""

    def __init__(self, args: argparse.Namespace, corpus: Any, queries: Sequence[Any], systems: Sequence[Any],
                 embedding_specs: Sequence[Any], reranker_specs: Sequence[Any], baseline: str,
                 output_dir: Path) -> None:
        self.args = args
        self.corpus = corpus
        self.queries = queries
        self.systems = systems
        self.embedding_specs = embedding_specs
        self.reranker_specs = reranker_specs
        self.baseline = baseline
        self.output_dir = Path(output_dir)
        self.judge_summary: dict[str, Any] | None = None
        self.generator_summary: dict[str, Any] | None = None
        self.answer_records: list[dict[str, Any]] = []
        self.published: list[dict[str, Any]] | None = None
        # Set by evaluate_rag.py from ragtune.audit: its summary, and the indices of test queries with a
        # near-copy in --train_data (metrics are then also reported without them).
        self.data_audit: dict[str, Any] | None = None
        self.leaked: list[int] = []
        self._compared: dict[tuple, dict[str, Any]] = {}

    @property
    def main_k(self) -> int:
        return int(split_metric_key(self.args.main_metric)[1])

    def config(self) -> dict[str, Any]:
        """The flags (secrets redacted) and what was evaluated: data, models, definitions."""
        args = self.args
        config = redact_config(vars(args))
        config.update({
            "ragtune_version": __version__,
            "corpus": {"path": str(args.corpus), "passages": len(self.corpus),
                       "fingerprint": self.corpus.fingerprint()},
            "test_data": {"path": str(args.test_data), "queries": len(self.queries),
                          "sha256": hashlib.sha256(Path(args.test_data).read_bytes()).hexdigest()[:16]},
            "baseline_system": self.baseline,
            "models": {"embedding": [s.describe() for s in self.embedding_specs],
                       "reranker": [s.describe() for s in self.reranker_specs]},
            "definitions": {
                "context_precision@k": "sum_{i<=k} precision@i * rel_i / sum_{i<=k} rel_i (RAGAS formula, labels "
                                       "as verdicts; 0 if no relevant passage in the top k)",
                "context_recall@k": "|relevant ∩ top k| / |relevant| (ID-based, equals recall@k)",
                "ties": "first stage: score desc, then passage id desc (trec_eval); reranked: reranker logit desc, "
                        "then first-stage order; fused: fused score desc, then passage id desc",
                "hybrid": "'+ bm25 (rrf)': sum of 1/(60 + rank) over the dense and BM25 lists; '+ bm25 (weighted w)': "
                          "w * dense + (1 - w) * BM25, scores min-max normalised per query over each list (a passage "
                          "missing from a list counts 0); each list is the top info.fusion_depth passages (100, or "
                          "the depth saved with w; the whole corpus when smaller: info.fusion_candidates), whatever "
                          "k; w and its depth from the model's metrics.json, else w chosen on --train_data by "
                          "weight_rule at depth 100, else 0.5 (info.weight_from)",
                "fused reranker": "'(fused r)': r * reranker + (1 - r) * first stage over the reranked top "
                                  "info.reranker_fusion_depth (the top N r was chosen at: the reranker's metrics.json, "
                                  "else rerank_top_n), both min-max normalised per query; r as w "
                                  "(info.reranker_weight_from)",
                "significance": "per system against baseline_system on main_metric, paired over the test queries: "
                                "mean difference, 95% percentile-bootstrap CI, two-sided sign-flip randomisation "
                                "p-value; significant = p < 0.05",
            },
        })
        return config

    def significance(self) -> dict[str, dict[str, Any]]:
        """Each system against the baseline on the main metric, paired over the test queries
        (:func:`ragtune.core.significance.compare`): results.json's ``significance``, keyed by system name."""
        metric = self.args.main_metric
        base = next((s for s in self.systems if s.name == self.baseline), None)
        if base is None or not base.per_query:
            return {}
        seed = getattr(self.args, "seed", None) or 0
        b = [row.get(metric) for row in base.per_query]
        out = {}
        for system in self.systems:
            a = [row.get(metric) for row in system.per_query]
            if system is base or len(a) != len(b) or None in a or None in b:
                continue
            key = (system.name, tuple(a), tuple(b), seed)
            if key not in self._compared:  # payload() is built several times per run; resampling is not free
                self._compared[key] = compare(a, b, seed=seed)
            out[system.name] = {"baseline": base.name, "metric": metric, **self._compared[key]}
        return with_holm(out) if out else out

    def payload(self) -> dict[str, Any]:
        """results.json's content."""
        systems = [{"name": s.name, "kind": s.kind, "embedding_model": s.embedding_model,
                    "reranker_model": s.reranker_model, "metrics": _sort_metrics(s.metrics),
                    "excluded": dict(sorted(s.excluded.items())), "info": s.info} for s in self.systems]
        if self.leaked:
            left_out = set(self.leaked)
            for entry, system in zip(systems, self.systems):
                entry["metrics_without_leaked"] = _sort_metrics(metrics_without(system.per_query,
                                                                                list(system.metrics), left_out))
        payload: dict[str, Any] = {"config": self.config(), "systems": systems}
        significance = self.significance()
        if significance:
            payload["significance"] = significance
        if self.data_audit is not None:
            payload["data_audit"] = self.data_audit
        if self.leaked:
            payload["leaked_test_queries"] = {"count": len(self.leaked),
                                              "queries_kept": len(self.queries) - len(self.leaked),
                                              "rows": [self.queries[i].row for i in self.leaked]}
        if self.judge_summary:
            payload["judge"] = self.judge_summary
        if self.generator_summary:
            payload["generator"] = self.generator_summary
        if self.published is not None:
            payload["published"] = self.published
        return payload

    def write(self) -> None:
        payload = shown_in(self.payload())
        write_json(self.output_dir / "results.json", payload)
        write_text(self.output_dir / "results.md", shown(results_markdown(payload, self.baseline)))
        write_per_query_csv(self.output_dir / "per_query.csv", self.queries, self.systems, self.corpus,
                            max(self.args.k))
        plot_chart(self.output_dir / "results.png", payload["systems"], self.main_k)
        if self.answer_records:
            write_answers_csv(self.output_dir / "answers.csv", self.answer_records)
        write_results_html(self.output_dir / HTML_FILE, payload, self.queries, self.systems, self.corpus,
                           self.answer_records, max(self.args.k), getattr(self.args, "seed", None) or 0)

    def console_table(self) -> str:
        """The final table the script prints: every system at the main metric's k."""
        payload = self.payload()
        return console_table(payload["systems"], self.main_k, significance=payload.get("significance"),
                             baseline=self.baseline, main_metric=self.args.main_metric)

    def leak_line(self) -> str:
        """One console line: the main metric of every system without the leaked test queries."""
        key, n = self.args.main_metric, len(self.leaked)
        cells = [f"{system['name']} " + fmt_with_delta(system["metrics_without_leaked"].get(key),
                                                        system["metrics"].get(key))
                 for system in self.payload()["systems"]]
        return (f"Without the {n} leaked test {'query' if n == 1 else 'queries'} (near-copies of --train_data "
                f"queries), {key}: " + ", ".join(cells) + " (results.md)")


def _sort_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    order = {name: i for i, name in enumerate(METRIC_ORDER)}

    def key(item: tuple[str, Any]) -> tuple[int, str, int]:
        name, k = split_metric_key(item[0])
        return order.get(name, 99), name, k or 0

    return dict(sorted(metrics.items(), key=key))

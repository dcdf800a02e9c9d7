"""results.html payloads for the tests: a small run (three systems, two queries, a hostile text and a key-shaped
secret), and the same run with answers, a judge, recall/MRR across k, a weighted hybrid and a data audit."""

from __future__ import annotations

from types import SimpleNamespace

from ragtune.core.data import Corpus, LabelledQuery
from ragtune.evaluate.html_report import drilldown_data, metric_intervals, render_results_html, table_keys

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


def render_full_run(names: dict[str, str] | None = None) -> str:
    """A run with answers, a judge, recall/MRR at two cutoffs, a weighted hybrid and a data audit."""
    payload, corpus, queries, systems, records = make_run()
    extra = {"recall@1": 0.5, "recall@3": 1.0, "mrr@1": 0.5, "mrr@3": 0.75, "llm_context_precision@3": 0.6,
             "rouge_l@3": 0.4, "bleu4@3": 0.2, "groundedness@3": 0.9, "noise_sensitivity@3": 0.1}
    for entry, system in zip(payload["systems"], systems):
        entry["metrics"].update(extra)
        for row in system.per_query:
            row.update({key: value for key, value in extra.items() if key != "bleu4@3"})  # corpus BLEU: no rows
    payload["config"]["train_data"] = {"path": "train.csv"}
    payload["generator"] = {"model": "tiny-generator", "answer_k": [3]}
    payload["judge"] = {"model": "tiny-judge"}
    payload["systems"][2]["info"] = {
        "dense_weight": 0.4, "fusion_depth": 100, "weight_from": "train_data",
        "weight_choice": {"rule": "smoothed", "chosen_on_queries": 20, "metric": "ndcg@3", "chosen_value": 0.5}}
    payload["data_audit"] = {"pii": {"checked": False}, "conflicting_labels": 0,
                             "leakage": {"leaked_test_queries": 1, "test_queries": 2},
                             "duplicate_passages": {"groups": 0, "passages": 0, "queries_with_unlabelled_twin": 0}}
    if names:  # system names as real runs make them ("<model folder> + bm25 (weighted 0.8) + ...")
        for system in systems:
            system.name = names[system.name]
        for record in records:
            record["system"] = names[record["system"]]
        for entry in payload["systems"]:
            entry["name"] = names[entry["name"]]
        payload["config"]["baseline_system"] = names[payload["config"]["baseline_system"]]
        payload["significance"] = {names[name]: value for name, value in payload["significance"].items()}
    details = drilldown_data(payload, queries, systems, corpus, records, depth=2)
    return render_results_html(payload, details, metric_intervals(systems, table_keys(payload)))


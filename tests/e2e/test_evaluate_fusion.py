"""evaluate_rag.py's hybrid and fused-reranker systems (weights from metrics.json or --train_data, never the
test labels, applied at the depth they were chosen at) and its significance statistics against the baseline, on
the sample data with tiny models."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import pytest

from ragtune.core.data import SAMPLE_CORPUS, SAMPLE_TEST, SAMPLE_TRAIN, load_corpus, load_queries


def with_fusion(src: Path, dst: Path, **fusion: float) -> Path:
    """A copy of a tiny model whose metrics.json carries the fusion weights a training script would save."""
    shutil.copytree(src, dst)
    (dst / "metrics.json").write_text(json.dumps({"fusion": {"chosen_on": "dev", **fusion}}))
    return dst


def top_ids(out: Path, system: str, n: int) -> list[list[str]]:
    with open(out / "per_query.csv", encoding="utf-8-sig", newline="") as handle:
        return [row[f"{system} | retrieved_ids"].split()[:n] for row in csv.DictReader(handle)]


def assert_same_order_up_to_float_noise(ids: list[list[str]], runs: list[dict[str, float]], tolerance: float = 1e-4):
    """Each query's ``ids`` rank as its run's scores do, except where two scores differ by float noise only.

    evaluate_rag.py scores cached embeddings chunk by chunk and a FirstStage its own in-memory ones: the same
    numbers up to float32 rounding, which min-max normalisation over a random tiny model's close scores can
    blow up to ~1e-5 and let two passages that tie trade places.
    """
    from ragtune.core.fusion import ranking

    for query, (got, run) in enumerate(zip(ids, runs)):
        expected = ranking(run)[:len(got)]
        assert all(pid in run for pid in got), (query, got, expected)
        assert all(abs(run[a] - run[b]) <= tolerance for a, b in zip(got, expected)), (query, got, expected)


def by_name(results: dict) -> dict[str, dict]:
    return {s["name"]: s for s in results["systems"]}


@pytest.fixture(scope="module")
def saved_run(models, tmp_path_factory):
    """Dense weights 0 and 1 and reranker weight 1 saved in metrics.json (as saved before the depth was saved
    with them); --train_data given but not needed; the first embedding model as the --baseline."""
    import evaluate_rag

    root = tmp_path_factory.mktemp("fusion")
    w0 = with_fusion(models["st_a"], root / "dense-w0", first_stage="hybrid", dense_weight=0.0)
    w1 = with_fusion(models["st_a"], root / "dense-w1", first_stage="hybrid", dense_weight=1.0)
    ce = with_fusion(models["ce_a"], root / "ce-r1", first_stage="hybrid", dense_weight=0.5, reranker_weight=1.0)
    out = root / "out"
    argv = ["--embedding_models", str(w0), str(w1), "--reranker_models", str(ce), "--rerank_top_n", "8",
            "--max_seq_length", "64", "--reranker_max_length", "96", "--train_data", str(SAMPLE_TRAIN),
            "--output_dir", str(out), "--baseline", "dense-w0"]
    assert evaluate_rag.main(argv) == 0
    return {"out": out, "results": json.loads((out / "results.json").read_text())}


def test_saved_dense_weight_is_used(saved_run):
    out, systems = saved_run["out"], by_name(saved_run["results"])
    w0, w1 = systems["dense-w0 + bm25 (weighted 0)"], systems["dense-w1 + bm25 (weighted 1)"]
    assert (w0["info"]["dense_weight"], w0["info"]["weight_from"]) == (0.0, "metrics.json")
    assert (w1["info"]["dense_weight"], w1["info"]["weight_from"]) == (1.0, "metrics.json")
    # A record without a depth was chosen at depth 100: over the whole sample corpus (72 passages).
    assert (w0["info"]["fusion_depth"], w0["info"]["fusion_candidates"]) == (100, 72)
    assert systems["dense-w0 + bm25 (rrf)"]["info"]["fusion_depth"] == 100
    # Weight 0 ranks as BM25, weight 1 as the dense model (below the first few places, passages only one
    # list returned tie at 0 and may change places).
    assert top_ids(out, "dense-w0 + bm25 (weighted 0)", 5) == top_ids(out, "bm25", 5)
    assert top_ids(out, "dense-w1 + bm25 (weighted 1)", 5) == top_ids(out, "dense-w1", 5)
    assert top_ids(out, "dense-w0 + bm25 (weighted 0)", 5) != top_ids(out, "dense-w0", 5)
    assert w0["metrics"]["ndcg@5"] == pytest.approx(systems["bm25"]["metrics"]["ndcg@5"])
    assert w1["metrics"]["ndcg@5"] == pytest.approx(systems["dense-w1"]["metrics"]["ndcg@5"])


def test_saved_reranker_weight_is_used(saved_run):
    out, systems = saved_run["out"], by_name(saved_run["results"])
    reranked = "dense-w1 + bm25 (weighted 1) + ce-r1"
    fused = systems[reranked + " (fused 1)"]
    assert (fused["info"]["reranker_weight"], fused["info"]["reranker_weight_from"]) == (1.0, "metrics.json")
    assert fused["info"]["reranker_fusion_depth"] == 8  # no depth saved: --rerank_top_n
    assert fused["kind"] == "fused_rerank" and systems[reranked]["kind"] == "hybrid_rerank"
    # Weight 1: the reranker's order alone over its top 8.
    assert top_ids(out, reranked + " (fused 1)", 7) == top_ids(out, reranked, 7)


def test_significance_against_the_baseline(saved_run, capsys):
    results, systems = saved_run["results"], by_name(saved_run["results"])
    significance = results["significance"]
    baseline = results["config"]["baseline_system"]
    assert baseline == "dense-w0" and set(significance) == set(systems) - {baseline}
    for name, entry in significance.items():
        assert entry["baseline"] == baseline and entry["metric"] == "ndcg@5" and entry["queries"] == 40
        assert 0.0 < entry["p_value"] <= 1.0
        assert entry["ci_low"] <= entry["mean_difference"] <= entry["ci_high"]
        assert entry["mean_difference"] == pytest.approx(systems[name]["metrics"]["ndcg@5"]
                                                         - systems[baseline]["metrics"]["ndcg@5"])
        assert entry["significant"] == (entry["p_value"] < 0.05)
    # The same model under another folder name: identical per-query scores, no difference.
    same = significance["dense-w1"]
    assert same["mean_difference"] == 0.0 and same["p_value"] == 1.0 and not same["significant"]
    # BM25 against a random tiny model: a large, real difference.
    assert significance["bm25"]["significant"] and significance["bm25"]["ci_low"] > 0

    md = (saved_run["out"] / "results.md").read_text()
    assert "| system | ndcg@5 | Δ [95% CI] p |" in md
    bm25 = significance["bm25"]
    assert (f"| bm25 | {systems['bm25']['metrics']['ndcg@5']:.4f} | {bm25['mean_difference']:+.4f} "
            f"[{bm25['ci_low']:+.4f}, {bm25['ci_high']:+.4f}] p<0.001* |") in md
    assert "| dense-w1 | " in md and "+0.0000 [+0.0000, +0.0000] p=1.000 |" in md


def test_console_table_marks_significant_differences(saved_run, capsys):
    from ragtune.evaluate.reports import console_table, fmt_p

    results = saved_run["results"]
    table = console_table(results["systems"], 5, significance=results["significance"], baseline="dense-w0")
    lines = {line.split("  ")[0]: line for line in table.splitlines()}
    assert "Δ ndcg@5 (p)" in table.splitlines()[0]
    # Several systems are compared with dense-w0: the console shows the Holm-corrected p-value.
    assert lines["bm25"].rstrip().endswith(f"({fmt_p(results['significance']['bm25']['p_holm'])})*")
    assert lines["dense-w1"].rstrip().endswith("+0.0000 (p=1.000)")
    assert lines["dense-w0"].rstrip().endswith("base")


def _permuted_labels(path: Path) -> Path:
    """The sample test queries with every label moved to the next query: same queries, other answers."""
    with open(SAMPLE_TEST, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    labels = [row["Ground truth document"] for row in rows]
    for row, label in zip(rows, labels[1:] + labels[:1]):
        row["Ground truth document"] = label
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_weights_chosen_on_train_data_ignore_the_test_labels(models, tmp_path):
    import evaluate_rag

    chosen = []
    for test in (SAMPLE_TEST, _permuted_labels(tmp_path / "permuted.csv")):
        out = tmp_path / f"out-{len(chosen)}"
        assert evaluate_rag.main(["--embedding_models", str(models["st_b"]), "--reranker_models", str(models["ce_b"]),
                                  "--rerank_top_n", "8", "--max_seq_length", "64", "--reranker_max_length", "96",
                                  "--train_data", str(SAMPLE_TRAIN), "--test_data", str(test), "--output_dir",
                                  str(out), "--cache_dir", str(tmp_path / "cache")]) == 0
        results = json.loads((out / "results.json").read_text())
        systems = results["systems"]
        # The default baseline when BM25 is evaluated: every other system is compared with BM25.
        assert results["config"]["baseline_system"] == "bm25"
        assert set(results["significance"]) == {s["name"] for s in systems} - {"bm25"}
        (weighted,) = [s for s in systems if s["kind"] == "hybrid" and s["info"]["fusion"] == "weighted"]
        (fused,) = [s for s in systems if s["kind"] == "fused_rerank"]
        assert weighted["info"]["weight_from"] == "train_data" and fused["info"]["reranker_weight_from"] == "train_data"
        # Chosen by --weight_rule (default smoothed) at the depths they are applied at.
        choice = weighted["info"]["weight_choice"]
        assert choice["rule"] == "smoothed" and choice["chosen_on_queries"] == 100
        assert weighted["info"]["fusion_depth"] == 100
        assert choice["chosen_value"] <= choice["best_value"] + 1e-9
        assert fused["info"]["reranker_weight_choice"]["rule"] == "smoothed"
        assert fused["info"]["reranker_fusion_depth"] == 8
        chosen.append((weighted["info"]["dense_weight"], fused["info"]["reranker_weight"], weighted["metrics"]))
    assert chosen[0][:2] == chosen[1][:2]
    assert chosen[0][2] != chosen[1][2]  # the labels did change the test numbers


def test_no_hybrid_and_no_bm25(models, saved_run, tmp_path):
    import evaluate_rag

    names = []
    for extra in ([], ["--no_hybrid"]):
        out = tmp_path / f"out-{len(names)}"
        assert evaluate_rag.main(["--embedding_models", str(models["st_a"]), "--no_bm25", "--max_seq_length", "64",
                                  "--output_dir", str(out), "--cache_dir", str(saved_run["out"] / ".cache"),
                                  *extra]) == 0
        results = json.loads((out / "results.json").read_text())
        names.append([s["name"] for s in results["systems"]])
        assert results["config"]["baseline_system"] == "tiny-st"  # without BM25: the first embedding model
    # BM25 is scored for the hybrids but not listed; --no_hybrid leaves the hybrids out.
    assert names == [["tiny-st", "tiny-st + bm25 (rrf)", "tiny-st + bm25 (weighted 0.5)"], ["tiny-st"]]


def test_saved_depths_are_applied_as_chosen(models, saved_run, tmp_path, caplog):
    """A dense weight saved with depth 10 fuses the top 10 of each source, exactly as the training scripts'
    first stage fuses; a reranker weight saved with depth 12 reranks and fuses the top 12, whatever --rerank_top_n
    (and a weight chosen against another first stage than the hybrid it fuses with is flagged)."""
    from sentence_transformers import SentenceTransformer

    import evaluate_rag
    from ragtune.retrieval.first_stage import FirstStage, HybridFusion

    dense = with_fusion(models["st_a"], tmp_path / "dense-d10", first_stage="hybrid", dense_weight=0.5, depth=10)
    reranker = with_fusion(models["ce_a"], tmp_path / "ce-d12", first_stage="dense", reranker_weight=0.5, depth=12)
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        assert evaluate_rag.main(["--embedding_models", str(dense), "--reranker_models", str(reranker),
                                  "--rerank_top_n", "8", "--reranker_max_length", "96", "--output_dir", str(out),
                                  "--cache_dir", str(saved_run["out"] / ".cache")]) == 0
    systems = by_name(json.loads((out / "results.json").read_text()))
    weighted = systems["dense-d10 + bm25 (weighted 0.5)"]
    assert (weighted["info"]["fusion_depth"], weighted["info"]["fusion_candidates"]) == (10, 10)
    assert systems["dense-d10 + bm25 (rrf)"]["info"]["fusion_depth"] == 100

    corpus = load_corpus(SAMPLE_CORPUS)
    texts = [q.query for q in load_queries(SAMPLE_TEST, corpus)]
    stage = FirstStage(corpus, SentenceTransformer(str(dense), device="cpu"), kind="hybrid",
                       fusion=HybridFusion("weighted", 0.5, 10))
    # 20: every passage a depth-10 fusion can return (the top 10 of each source).
    assert_same_order_up_to_float_noise(top_ids(out, "dense-d10 + bm25 (weighted 0.5)", 7), stage.runs(texts, 20))
    # The same weight over the whole corpus ranks otherwise: the depth is part of the weight.
    assert top_ids(out, "dense-d10 + bm25 (weighted 0.5)", 7) != \
        FirstStage(corpus, stage.embedding_model, kind="hybrid").rankings(texts, 7)

    reranked = "dense-d10 + bm25 (weighted 0.5) + ce-d12"
    assert systems[reranked]["info"]["rerank_top_n"] == 8
    fused = systems[reranked + " (fused 0.5)"]["info"]
    assert (fused["rerank_top_n"], fused["reranker_fusion_depth"], fused["reranker_weight_from"]) == \
        (12, 12, "metrics.json")
    told = [r.getMessage() for r in caplog.records if "reranks and fuses the top 12" in r.getMessage()]
    assert len(told) == 1 and "not --rerank_top_n 8" in told[0]
    assert fused["reranker_weight_chosen_against"] == "dense"
    assert any("chosen against a dense first stage" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)

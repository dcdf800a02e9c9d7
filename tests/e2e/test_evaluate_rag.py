"""evaluate_rag.py end to end on the sample data with tiny models: reports, numbers against trec_eval, the cache,
bad input, prompts, and publishing (through a stand-in ragtune.evaluate.hub, and a dry run with the real one)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import run_script
from trec_reference import KS, trec_metrics, trec_order

from ragtune.core.bm25 import BM25Index
from ragtune.core.data import SAMPLE_CORPUS, SAMPLE_TEST, load_corpus, load_queries
from ragtune.core.errors import UserError
from ragtune.core.metrics import RANKING_METRICS
from ragtune.core.model_specs import folder_fingerprint
from ragtune.pipeline.names import WEIGHT, expected_names


def base_args(models, out: Path, *extra: str) -> list[str]:
    return ["--embedding_models", str(models["st_a"]), str(models["st_b"]), "--reranker_models", str(models["ce_a"]),
            "--rerank_top_n", "8", "--max_seq_length", "64", "--reranker_max_length", "96",
            "--output_dir", str(out), *extra]


@pytest.fixture(scope="module")
def full_run(models, tmp_path_factory):
    """The script on the sample data: BM25 + 2 embedding models + a reranker, run twice (second from the cache)."""
    out = tmp_path_factory.mktemp("eval") / "out"
    first = run_script("evaluate_rag.py", *base_args(models, out))
    assert first.returncode == 0, first.stderr[-4000:]
    first_results = json.loads((out / "results.json").read_text())
    second = run_script("evaluate_rag.py", *base_args(models, out))
    assert second.returncode == 0, second.stderr[-4000:]
    return {"out": out, "first": first, "second": second, "first_results": first_results,
            "results": json.loads((out / "results.json").read_text())}


def test_reports_are_written(full_run):
    out = full_run["out"]
    for name in ("results.json", "results.md", "results.png", "per_query.csv"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"Next: python predict_rag.py --from {out} --system best" in full_run["first"].stderr


def test_results_json_structure(full_run, models):
    results = full_run["results"]
    names = [s["name"] for s in results["systems"]]
    # No --train_data and no weights in the models' metrics.json: the weighted fusions use 0.5.
    assert names == ["bm25", "tiny-st", "tiny-st-b", "tiny-st + bm25 (rrf)", "tiny-st + bm25 (weighted 0.5)",
                     "tiny-st-b + bm25 (rrf)", "tiny-st-b + bm25 (weighted 0.5)", "tiny-st + tiny-ce",
                     "tiny-st-b + tiny-ce", "tiny-st + bm25 (weighted 0.5) + tiny-ce",
                     "tiny-st + bm25 (weighted 0.5) + tiny-ce (fused 0.5)", "tiny-st-b + bm25 (weighted 0.5) + tiny-ce",
                     "tiny-st-b + bm25 (weighted 0.5) + tiny-ce (fused 0.5)"]
    # The names the flags naming systems are checked against before retrieval are these, weights aside.
    expected = expected_names(True, True, ["tiny-st", "tiny-st-b"], ["tiny-ce"])
    assert sorted(n.replace(WEIGHT, "0.5") for n in expected) == sorted(names)
    assert {s["info"].get("weight_from") for s in results["systems"] if "weighted" in s["name"]} == {"default"}
    assert {s["info"]["reranker_weight_from"] for s in results["systems"] if "fused" in s["name"]} == {"default"}
    # Every hybrid fuses the top 100 of BM25 and the dense model (the whole 72-passage corpus), whatever k; the
    # fused reranker fuses over the reranked top --rerank_top_n (no depth saved).
    hybrids = [s["info"] for s in results["systems"] if s["kind"] == "hybrid"]
    assert {(i["fusion_depth"], i["fusion_candidates"]) for i in hybrids} == {(100, 72)}
    assert {s["info"]["reranker_fusion_depth"] for s in results["systems"] if s["kind"] == "fused_rerank"} == {8}
    assert results["config"]["baseline_system"] == "bm25" and results["config"]["weight_rule"] == "smoothed"
    expected_keys = {f"{m}@{k}" for m in (*RANKING_METRICS, "context_precision", "context_recall") for k in KS}
    for system in results["systems"]:
        assert set(system) >= {"name", "embedding_model", "reranker_model", "metrics"}
        assert set(system["metrics"]) == expected_keys
        assert all(0.0 <= v <= 1.0 for v in system["metrics"].values())
        # ID-based context recall is recall@k by definition.
        for k in KS:
            assert system["metrics"][f"context_recall@{k}"] == pytest.approx(system["metrics"][f"recall@{k}"])
    reranked = results["systems"][names.index("tiny-st + tiny-ce")]
    assert reranked["embedding_model"] == str(models["st_a"]) and reranked["reranker_model"] == str(models["ce_a"])
    assert len(reranked["info"]["reranker_model_hash"]) == 16
    config = results["config"]
    assert config["k"] == [3, 5, 7] and config["main_metric"] == "ndcg@5" and config["rerank_top_n"] == 8
    assert config["test_data"]["queries"] == 40 and config["corpus"]["passages"] == 72
    assert len(config["corpus"]["fingerprint"]) == 16
    assert [m["hash"] for m in config["models"]["embedding"]] == [folder_fingerprint(models["st_a"]),
                                                                 folder_fingerprint(models["st_b"])]


def assert_trec_means(metrics: dict, ids, scores, queries, abs: float) -> None:
    """Every metric of a system in results.json equals trec_eval's mean over the queries, given the same scores."""
    run = {f"q{i}": dict(zip(ids, map(float, row))) for i, row in enumerate(scores)}
    qrels = {f"q{i}": {pid: 1 for pid in q.relevant_ids} for i, q in enumerate(queries)}
    trec = trec_metrics(run, qrels, KS)
    for key in trec["q0"]:
        assert metrics[key] == pytest.approx(np.mean([trec[q][key] for q in run]), abs=abs), key


def test_bm25_numbers_equal_an_independent_trec_eval_computation(full_run):
    corpus = load_corpus(SAMPLE_CORPUS)
    queries = load_queries(SAMPLE_TEST, corpus, flag="--test_data")
    scores = BM25Index(corpus.texts).scores([q.query for q in queries])
    assert_trec_means(full_run["results"]["systems"][0]["metrics"], corpus.ids, scores, queries, abs=1e-12)

    # per_query.csv: labels, each system's top 7 and first-hit rank, for error analysis.
    with open(full_run["out"] / "per_query.csv", encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(queries)
    for i, (row, query) in enumerate(zip(rows, queries)):
        assert row["query"] == query.query
        assert row["relevant_ids"].split() == query.relevant_ids
        expected = trec_order(corpus.ids, scores[i])
        assert row["bm25 | retrieved_ids"].split() == expected[:7]
        first = next(r for r, pid in enumerate(expected, start=1) if pid in query.relevant_ids)
        assert row["bm25 | first_hit_rank"] == (str(first) if first <= 8 else "")
        assert "tiny-st + tiny-ce | first_hit_rank" in row


def test_dense_numbers_equal_a_brute_force_computation(full_run, models):
    from sentence_transformers import SentenceTransformer

    corpus = load_corpus(SAMPLE_CORPUS)
    queries = load_queries(SAMPLE_TEST, corpus, flag="--test_data")
    model = SentenceTransformer(str(models["st_b"]), device="cpu")
    model.max_seq_length = 64
    p = model.encode(corpus.texts, normalize_embeddings=True)
    q = model.encode([x.query for x in queries], normalize_embeddings=True)
    assert_trec_means(full_run["results"]["systems"][2]["metrics"], corpus.ids, q @ p.T, queries, abs=1e-5)


def test_second_run_uses_the_cache(full_run):
    first, second = full_run["first"].stderr, full_run["second"].stderr
    assert first.count("Encoding 72 passages") == 2
    assert "Encoding 72 passages" not in second
    assert second.count("cache hit") == 2
    assert "Loading embedding model" not in second  # queries cached too: no model is even loaded
    assert "every pair scored in the cache" in second
    cache = full_run["out"] / ".cache"
    assert len(list((cache / "embeddings").glob("passages-*.npy"))) == 2
    assert len(list((cache / "rerank").glob("scores-*.json"))) == 1
    for before, after in zip(full_run["first_results"]["systems"], full_run["results"]["systems"]):
        assert before["metrics"] == after["metrics"]  # reproducible to the last digit


def test_results_markdown(full_run):
    md = (full_run["out"] / "results.md").read_text()
    assert "## bm25" in md and "## tiny-st + tiny-ce" in md
    assert "| metric | @3 | @5 | @7 |" in md
    assert "## Comparison (delta against `bm25`)" in md
    assert "bm25 (base)" in md
    assert "(+" in md or "(-" in md


# ---------------------------------------------------------------------------- bad input


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("case", ["unknown_path", "not_a_model", "offline_hub_id", "empty_test", "missing_ids",
                                  "k_zero", "bad_main_metric", "rerank_top_n", "missing_corpus", "baseline_no_bm25",
                                  "unknown_baseline"])
def test_bad_input_exits_2_with_one_line(case, tmp_path):
    args = ["--output_dir", str(tmp_path / "out"), "--embedding_models"]
    expected = {
        "unknown_path": "no model folder",
        "not_a_model": "is not a model folder",
        "offline_hub_id": "neither a local model folder nor a Hub model in the local cache",
        "empty_test": "holds no queries",
        "missing_ids": "2 ground-truth id\\(s\\) not in the corpus .*: 555, 999 \\(rows 2, 3\\)",
        "k_zero": "--k: cutoffs must be positive",
        "bad_main_metric": "--main_metric must be one of",
        "rerank_top_n": "--rerank_top_n must be at least 1",
        "missing_corpus": "--corpus: file not found",
        "baseline_no_bm25": "--baseline bm25 compares every system with BM25: drop --no_bm25",
        "unknown_baseline": "--baseline 'nope' is not a system of this run; the systems .*: bm25$",
    }[case]
    if case == "unknown_path":
        args += ["./no/such/model"]
    elif case == "not_a_model":
        (tmp_path / "empty").mkdir()
        args += [str(tmp_path / "empty")]
    elif case == "offline_hub_id":
        args += ["nobody-here/not-a-model-xyz"]
    elif case == "empty_test":
        args += ["--test_data", str(write_csv(tmp_path / "t.csv", "Query,Ground truth document", []))]
    elif case == "missing_ids":
        args += ["--test_data", str(write_csv(tmp_path / "t.csv", "Query,Ground truth document",
                                              ['"q1","1, 999"', "q2,555", "q3,3"]))]
    elif case == "k_zero":
        args += ["--k", "0", "5"]
    elif case == "bad_main_metric":
        args += ["--main_metric", "ndcg@10"]
    elif case == "rerank_top_n":
        args += ["--rerank_top_n", "0"]
    elif case == "missing_corpus":
        args += ["--corpus", str(tmp_path / "nope.csv")]
    elif case == "baseline_no_bm25":
        args += ["some/model", "--no_bm25", "--baseline", "bm25"]
    elif case == "unknown_baseline":
        args += ["--baseline", "nope"]
    proc = run_script("evaluate_rag.py", *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    import re

    assert re.search(expected, lines[0]), lines[0]


def test_missing_ids_can_be_dropped(tmp_path):
    test = write_csv(tmp_path / "t.csv", "Query,Ground truth document", ['"q1","1, 999"', "q2,555", "q3,3"])
    proc = run_script("evaluate_rag.py", "--embedding_models", "--test_data", str(test), "--allow_missing_ids",
                      "--output_dir", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["config"]["test_data"]["queries"] == 2 and [s["name"] for s in results["systems"]] == ["bm25"]


def test_query_prompt_changes_the_cache_key_and_is_recorded(models, full_run, tmp_path, caplog):
    import logging

    import evaluate_rag

    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        assert evaluate_rag.main(["--embedding_models", str(models["st_a"]), "--no_bm25", "--max_seq_length", "64",
                                  "--query_prompt", "query: ", "--passage_prompt", "passage: ", "--output_dir",
                                  str(out), "--cache_dir", str(full_run["out"] / ".cache")]) == 0
    assert "Encoding 72 passages" in caplog.text  # not the cached, prompt-less embeddings
    system = json.loads((out / "results.json").read_text())["systems"][0]
    assert system["info"]["query_prompt"] == "query: " and system["info"]["passage_prompt"] == "passage: "
    assert system["metrics"] != full_run["results"]["systems"][1]["metrics"]


# ---------------------------------------------------------------------------- publishing selection


def _ranked_models(full_run):
    """The two embedding models ordered (worse, better) on ndcg@5 in the full run."""
    a, b = full_run["results"]["systems"][1:3]
    assert a["metrics"]["ndcg@5"] != b["metrics"]["ndcg@5"]
    return ("st_a", "st_b") if a["metrics"]["ndcg@5"] < b["metrics"]["ndcg@5"] else ("st_b", "st_a")


def _publish_args(models, full_run, out, order, *extra):
    return ["--embedding_models", *[str(models[k]) for k in order], "--max_seq_length", "64", "--output_dir",
            str(out), "--cache_dir", str(full_run["out"] / ".cache"), "--push_to_hub", "--hub_embedding_repo",
            "me/emb", "--hub_token", "hf_SECRET_token", *extra]


def test_publish_selects_the_better_model_and_never_writes_the_token(fake_hub, models, full_run, tmp_path,
                                                                     monkeypatch):
    import evaluate_rag

    worse, better = _ranked_models(full_run)
    out = tmp_path / "out"
    assert evaluate_rag.main(_publish_args(models, full_run, out, (worse, better), "--dry_run")) == 0
    (call,) = fake_hub.calls
    (request,) = call["requests"]
    assert request.model_dir == Path(models[better]) and request.repo_id == "me/emb" and request.kind == "embedding"
    assert request.base_model == models[worse].name  # the baseline's folder name (no Hub id recorded): no path
    assert call["token"] == "hf_SECRET_token" and call["private"] is True and call["dry_run"] is True
    assert request.metrics["ndcg@5"] >= request.baseline_metrics["ndcg@5"]
    assert "ndcg@5" in request.results_markdown and "(base)" in request.results_markdown
    results = json.loads((out / "results.json").read_text())
    assert results["published"][0]["repo_id"] == "me/emb"
    for path in out.rglob("*"):
        if path.is_file():
            assert b"hf_SECRET_token" not in path.read_bytes(), path


def test_publish_refuses_a_regression_unless_allowed(fake_hub, models, full_run, tmp_path):
    import evaluate_rag

    worse, better = _ranked_models(full_run)
    out = tmp_path / "out"
    with pytest.raises(UserError, match="below its baseline.*--allow_regression"):
        evaluate_rag.main(_publish_args(models, full_run, out, (better, worse)))
    assert fake_hub.calls == [] and (out / "results.json").exists()
    assert evaluate_rag.main(_publish_args(models, full_run, out, (better, worse), "--allow_regression",
                                           "--public")) == 0
    (call,) = fake_hub.calls
    assert call["requests"][0].model_dir == Path(models[worse]) and call["private"] is False


def test_publish_hub_error_keeps_results(fake_hub, models, full_run, tmp_path):
    import evaluate_rag

    fake_hub.fail = True
    out = tmp_path / "out"
    with pytest.raises(UserError, match="hub said no"):
        evaluate_rag.main(_publish_args(models, full_run, out, ("st_a",)))
    assert (out / "results.json").exists() and (out / "per_query.csv").exists()


def test_publish_flags_are_checked_first(tmp_path):
    proc = run_script("evaluate_rag.py", "--embedding_models", "--push_to_hub", "--output_dir", str(tmp_path))
    assert proc.returncode == 2 and "--hub_embedding_repo, --hub_reranker_repo and/or --hub_generator_repo" in proc.stderr
    proc = run_script("evaluate_rag.py", "--embedding_models", "BAAI/bge-m3", "--push_to_hub", "--hub_reranker_repo",
                      "me/rr", "--output_dir", str(tmp_path))
    assert proc.returncode == 2 and "no --reranker_models to publish" in proc.stderr


def test_publish_dry_run_with_the_real_hub_module(models, full_run, tmp_path):
    """The real ragtune.evaluate.hub in a dry run: the card carries --language/--license; the token is nowhere."""
    out = tmp_path / "out"
    token = "hf_EvalRagSecretToken0123456789abc"
    proc = run_script("evaluate_rag.py", "--embedding_models", str(models["st_a"]), "--reranker_models",
                      str(models["ce_a"]), "--rerank_top_n", "8", "--max_seq_length", "64", "--reranker_max_length",
                      "96", "--output_dir", str(out), "--cache_dir", str(full_run["out"] / ".cache"),
                      "--push_to_hub", "--hub_embedding_repo", "me/emb", "--hub_reranker_repo", "me/rr", "--dry_run",
                      "--hub_token", token, "--language", "vi", "en", "--license", "mit")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    published = results["published"]
    assert [p["repo_id"] for p in published] == ["me/emb", "me/rr"]
    for entry in published:
        card_yaml = yaml.safe_load(entry["card"].split("---")[1])
        assert card_yaml["language"] == ["vi", "en"] and card_yaml["license"] == "mit"
    config = results["config"]
    assert config["hub_token"] == "<redacted>" and config["language"] == ["vi", "en"] and config["license"] == "mit"
    assert config["judge_max_tokens"] == 512 and config["generator_max_new_tokens"] == 256
    assert token not in proc.stdout and token not in proc.stderr
    for path in out.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path


def test_bad_language_or_license_is_a_user_error(tmp_path):
    proc = run_script("evaluate_rag.py", "--embedding_models", "--language", "vi,en", "--output_dir", str(tmp_path))
    assert proc.returncode == 2 and "--language: 'vi,en' is not a language code" in proc.stderr
    proc = run_script("evaluate_rag.py", "--embedding_models", "--license", "Apache 2", "--output_dir", str(tmp_path))
    assert proc.returncode == 2 and "--license: 'Apache 2' is not a Hub license id" in proc.stderr


def test_a_single_test_query_gets_a_caution_not_a_bare_zero_width_interval(models, tmp_path):
    frame = load_queries(SAMPLE_TEST, load_corpus(SAMPLE_CORPUS))[:1]
    one = tmp_path / "one.csv"
    with open(one, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([["Query", "Ground truth document"],
                                      [frame[0].query, ", ".join(frame[0].relevant_ids)]])
    out = tmp_path / "eval"
    result = run_script("evaluate_rag.py", "--test_data", str(one), "--embedding_models", str(models["st_a"]),
                        "--no_hybrid", "--max_seq_length", "64", "--output_dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "**Caution, one query: the interval has zero width" in (out / "results.md").read_text(encoding="utf-8")
    assert "Caution, one query" in result.stdout

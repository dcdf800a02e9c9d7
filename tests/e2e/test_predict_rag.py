"""predict_rag.py end to end: the systems an evaluation measured, rebuilt from its systems.json, rank exactly as
measured; the output file; labels scored; bad input; resuming after a kill; query expansion as evaluated."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, assert_one_clear_error, run_script
from fake_openai import FakeOpenAI, closed_port_url

from ragtune.core.data import SAMPLE_CORPUS, SAMPLE_TEST, load_corpus, load_queries
from ragtune.core.expansions import QueryExpander
from ragtune.pipeline import RAGPipeline

ALL_KINDS = {"bm25", "dense", "hybrid", "rerank", "hybrid_rerank", "fused_rerank"}
MAP = "abbreviation,expansion\nclb,câu lạc bộ\nAI,trí tuệ nhân tạo\n"


def prompt_digest(messages: list[dict]) -> str:
    """The fake generator's answer: a digest of the whole prompt, so equal answers mean equal prompts."""
    return "answer " + hashlib.sha256(json.dumps(messages, ensure_ascii=False).encode()).hexdigest()[:12]


@pytest.fixture(scope="module")
def server():
    with FakeOpenAI(prompt_digest) as fake:
        yield fake


def evaluate(out: Path, *args: str) -> Path:
    import evaluate_rag

    assert evaluate_rag.main([*args, "--output_dir", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def evaluation(models, server, tmp_path_factory) -> Path:
    """evaluate_rag.py with an embedding model and a reranker (every kind of system) and an endpoint generator."""
    out = tmp_path_factory.mktemp("predict") / "eval"
    return evaluate(out, "--embedding_models", str(models["st_a"]), "--reranker_models", str(models["ce_a"]),
                    "--rerank_top_n", "8", "--max_seq_length", "64", "--reranker_max_length", "96",
                    "--generator_base_url", server.base_url, "--generator_model", "fake")


def per_query(folder: Path) -> list[dict]:
    with open(folder / "per_query.csv", encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def measured(folder: Path, system: str, k: int) -> list[list[str]]:
    """The ranked ids evaluate_rag.py reported for ``system`` (per_query.csv keeps the top 7)."""
    return [row[f"{system} | retrieved_ids"].split()[:k] for row in per_query(folder)]


def test_every_system_ranks_as_evaluated(evaluation, tmp_path):
    results = json.loads((evaluation / "results.json").read_text())
    queries = [q.query for q in load_queries(SAMPLE_TEST, load_corpus(SAMPLE_CORPUS), flag="--test_data")]
    assert {s["kind"] for s in results["systems"]} == ALL_KINDS
    for system in results["systems"]:
        # A cache of its own: nothing is read from the evaluation's, the lists are computed again.
        rag = RAGPipeline.from_evaluation(evaluation, system["name"], generator=False, cache_dir=tmp_path / "cache")
        assert rag.spec.kind == system["kind"]
        predicted = [[p.id for p in passages] for passages in rag.retrieve_batch(queries, 7)]
        assert predicted == measured(evaluation, system["name"], 7), system["name"]


def test_predict_best_writes_the_file_described(evaluation, server, tmp_path):
    results = json.loads((evaluation / "results.json").read_text())
    best = max(results["systems"], key=lambda s: s["metrics"]["ndcg@5"])
    out = tmp_path / "predictions.csv"
    done = run_script("predict_rag.py", "--from", str(evaluation), "--system", "best", "--queries", str(SAMPLE_TEST),
                      "--output", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    frame = pd.read_csv(out, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    source = pd.read_csv(SAMPLE_TEST, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    assert list(frame.columns) == [*source.columns, "retrieved_ids", "retrieved_texts", "scores", "answer"]
    assert frame[list(source.columns)].equals(source)  # the input's columns as they were
    ids = [row.split(", ") for row in frame["retrieved_ids"]]
    assert ids == measured(evaluation, best["name"], 5)
    corpus = load_corpus(SAMPLE_CORPUS)
    assert [json.loads(t) for t in frame["retrieved_texts"]] == [[corpus.text(i) for i in row] for row in ids]
    assert all(len(s.split(", ")) == 5 for s in frame["scores"])
    # The answers evaluate_rag.py scored for that system at k=5: the same prompts.
    with open(evaluation / "answers.csv", encoding="utf-8-sig", newline="") as handle:
        scored = [r["answer"] for r in csv.DictReader(handle) if r["system"] == best["name"] and r["k"] == "5"]
    assert list(frame["answer"]) == scored
    # Labels scored with evaluate_rag.py's metrics: the same numbers.
    metrics = json.loads((tmp_path / "predictions.metrics.json").read_text())
    assert metrics["system"] == best["name"] and metrics["queries_scored"] == 40
    for key in ("ndcg@5", "recall@3", "mrr@5", "context_precision@5"):
        assert metrics["retrieval"][key] == pytest.approx(best["metrics"][key], abs=1e-12), key
    assert "ndcg" in done.stdout and "(40 labelled queries)" in done.stdout


def test_fused_and_explicit_systems_as_processes(evaluation, models, tmp_path):
    results = json.loads((evaluation / "results.json").read_text())
    fused = next(s["name"] for s in results["systems"] if s["kind"] == "fused_rerank")
    out = tmp_path / "fused.jsonl"
    done = run_script("predict_rag.py", "--from", str(evaluation), "--system", fused, "--no_generator", "--k", "7",
                      "--output", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["retrieved_ids"].split(", ") for r in rows] == measured(evaluation, fused, 7)
    assert all("answer" not in r and len(r["retrieved_texts"]) == 7 == len(r["scores"]) for r in rows)
    assert rows[0]["Query"] == load_queries(SAMPLE_TEST, load_corpus(SAMPLE_CORPUS))[0].query
    # Named models instead of --from: the dense system as evaluated (same model, same length).
    out = tmp_path / "dense.xlsx"
    done = run_script("predict_rag.py", "--embedding_model", str(models["st_a"]), "--max_seq_length", "64",
                      "--output", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    frame = pd.read_excel(out, dtype=str)
    dense = next(s["name"] for s in results["systems"] if s["kind"] == "dense")
    assert [row.split(", ") for row in frame["retrieved_ids"]] == measured(evaluation, dense, 5)


# ---------------------------------------------------------------------------- bad input


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("case", ["no_evaluation", "unknown_system", "no_query_column", "empty_queries",
                                  "blank_expansion", "self_expansion", "dead_endpoint", "from_and_model_flags",
                                  "broken_local_generator"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, evaluation, tmp_path):
    out = tmp_path / "out" / "predictions.csv"
    args = ["--from", str(evaluation), "--no_generator", "--output", str(out)]
    expected = {
        "no_evaluation": "holds no evaluation: no systems.json",
        "unknown_system": "--system 'nope' is not a system of the evaluation",
        "no_query_column": "needs columns ('Query') or ('query')",
        "empty_queries": "holds no queries",
        "blank_expansion": "line 2: blank expansion for 'clb'",
        "self_expansion": "contains its own abbreviation 'clb' (self-referencing)",
        "dead_endpoint": "--generator_base_url http://127.0.0.1",
        "from_and_model_flags": "rebuilds the evaluated system: drop --rerank_top_n",
        "broken_local_generator": "--generator_local: cannot load the model in",
    }[case]
    if case == "no_evaluation":
        (tmp_path / "empty").mkdir()
        args[1] = str(tmp_path / "empty")
    elif case == "unknown_system":
        args += ["--system", "nope"]
    elif case == "no_query_column":
        args += ["--queries", str(write(tmp_path / "q.csv", "Question,Answer\nCLB ở đâu?,x\n"))]
    elif case == "empty_queries":
        args += ["--queries", str(write(tmp_path / "q.csv", "Query,Ground truth document\n"))]
    elif case == "blank_expansion":
        args += ["--expansions", str(write(tmp_path / "x.csv", "abbreviation,expansion\nclb,\n"))]
    elif case == "self_expansion":
        args += ["--expansions", str(write(tmp_path / "x.csv", "clb,clb ptit\n"))]
    elif case == "dead_endpoint":
        args = ["--generator_base_url", closed_port_url(), "--generator_model", "g", "--endpoint_retries", "0",
                "--output", str(out)]
    elif case == "from_and_model_flags":
        args += ["--rerank_top_n", "10"]  # --from runs the reranker at the depth it was evaluated at
    elif case == "broken_local_generator":
        (tmp_path / "generator").mkdir()
        write(tmp_path / "generator" / "config.json", "{not json")
        args = ["--generator_local", str(tmp_path / "generator"), "--output", str(out)]
    result = run_script("predict_rag.py", *args)
    assert_one_clear_error(result, expected, out.parent)
    if case == "unknown_system":
        assert "bm25" in result.stderr and "best (" in result.stderr  # the names it has
    assert not out.with_suffix(".cache").exists()


# ---------------------------------------------------------------------------- resume


def test_a_killed_run_resumes_from_its_cache(tmp_path):
    """Killed while answering, the same command finishes the file, generating only the answers it lacked."""

    def slow(messages):
        time.sleep(0.15)
        return prompt_digest(messages)

    with FakeOpenAI(slow) as fake:
        out = tmp_path / "p.jsonl"
        command = [sys.executable, str(REPO / "predict_rag.py"), "--generator_base_url", fake.base_url,
                   "--generator_model", "g", "--generator_workers", "1", "--output", str(out)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cache = tmp_path / "p.cache" / "llm_cache.jsonl"
        deadline = time.time() + 300
        while time.time() < deadline and (not cache.exists() or len(cache.read_text().splitlines()) < 12):
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        answered = len(cache.read_text().splitlines())
        assert 12 <= answered < 40 and not out.exists()
        generated_before = fake.kinds().count("generate")
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        # The rerun asked the endpoint once to check it, then only for the answers the cache lacked.
        asked_again = fake.kinds().count("generate") - generated_before
        assert asked_again == 1 + 40 - answered
        assert f"Answers: {40 - answered} generated, {answered} from the cache" in done.stderr
        uninterrupted = tmp_path / "q.jsonl"
        fresh = subprocess.run([*command[:-1], str(uninterrupted)], cwd=REPO, env=env, capture_output=True,
                               text=True, timeout=600)
        assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert out.read_text(encoding="utf-8") == uninterrupted.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------- query expansion


def test_an_expansion_map_is_applied_in_prediction_as_in_evaluation(evaluation, models, tmp_path):
    root = tmp_path
    expansions = write(root / "map.csv", MAP)
    explicit = evaluate(root / "explicit", "--embedding_models", "--expansions", str(expansions))
    assert measured(explicit, "bm25", 7) != measured(evaluation, "bm25", 7)  # it changes BM25's lists
    # A map saved with the embedding model is applied by its systems (not by plain BM25) and recorded.
    model = root / "st-with-map"
    shutil.copytree(models["st_a"], model)
    QueryExpander({"clb": "câu lạc bộ"}).save(model)
    saved = evaluate(root / "saved", "--embedding_models", str(model), "--max_seq_length", "64", "--no_hybrid")
    systems = {s["name"]: s for s in json.loads((saved / "systems.json").read_text())["systems"]}
    assert systems["bm25"]["query_expansions"] is None
    assert systems["st-with-map"]["query_expansions"]["entries"] == [["clb", "câu lạc bộ"]]
    for folder, name in ((explicit, "bm25"), (saved, "st-with-map")):
        out = root / f"{folder.name}.csv"
        done = run_script("predict_rag.py", "--from", str(folder), "--system", name, "--k", "7", "--output",
                          str(out))
        assert done.returncode == 0, done.stderr[-3000:]
        frame = pd.read_csv(out, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        assert [row.split(", ") for row in frame["retrieved_ids"]] == measured(folder, name, 7), name
        assert "replaces the query expansion map" not in done.stderr
    # The same system without its map ranks otherwise: the map is what made the lists equal.
    rag = RAGPipeline.from_evaluation(saved, "st-with-map", generator=False, cache_dir=root / "c")
    plain = RAGPipeline(rag.spec.with_expansions(None), rag.parts)
    queries = [q.query for q in load_queries(SAMPLE_TEST, load_corpus(SAMPLE_CORPUS))]
    assert [[p.id for p in ps] for ps in plain.retrieve_batch(queries, 7)] != measured(saved, "st-with-map", 7)
    # An explicit --expansions replaces the evaluated map, and says so.
    other = write(root / "other.csv", "ctv,cộng tác viên\n")
    done = run_script("predict_rag.py", "--from", str(saved), "--system", "st-with-map", "--expansions", str(other),
                      "--output", str(root / "other.csv.out.csv"))
    assert done.returncode == 0 and "replaces the query expansion map st-with-map was evaluated with" in done.stderr

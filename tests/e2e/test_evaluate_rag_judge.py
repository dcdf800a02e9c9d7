"""evaluate_rag.py with an LLM judge and generators: LLM context metrics, answers, the cache on a rerun, an
endpoint that is down or answers garbage, and a local generator with a LoRA adapter.

Every endpoint is tests/fake_openai.py on 127.0.0.1: no network.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_script
from fake_openai import FakeOpenAI, closed_port_url, default_responder, prompt_kind

from ragtune.core.data import SAMPLE_TEST


@pytest.fixture(scope="module")
def small_test_set(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "test_small.csv"
    pd.read_csv(SAMPLE_TEST, encoding="utf-8-sig").head(6).to_csv(path, index=False)
    return path


def script_args(out: Path, test_data: Path, *extra: str) -> list[str]:
    return ["--test_data", str(test_data), "--output_dir", str(out), "--k", "3", "5", "--endpoint_retries", "1",
            "--endpoint_backoff", "0.01", *extra]


def error_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if "error:" in line]


def test_script_judge_generator_cache_and_failures(tiny_st, small_test_set, tmp_path):
    """LLM context metrics + answers; a rerun makes no call; malformed judgements are counted, not zeroed."""
    broken_passage = "Lịch sử thành lập"  # passage 2's text starts with it: its verdicts are always malformed

    def responder(messages):
        user = messages[1]["content"]
        if prompt_kind(messages) == "precision" and f"Context: {broken_passage}" in user:
            return "Hmm, hard to say."
        return default_responder(messages)

    out = tmp_path / "eval"
    with FakeOpenAI(responder) as server:
        args = script_args(out, small_test_set, "--embedding_models", str(tiny_st), "--judge_base_url",
                           server.base_url, "--judge_model", "fake-judge", "--judge_api_key", "sk-secret-judge",
                           "--generator_base_url", server.base_url, "--generator_model", "fake-gen",
                           "--generator_api_key", "sk-secret-generator",
                           "--answer_k", "3", "--answer_systems", "bm25")
        proc = run_script("evaluate_rag.py", *args)
        assert proc.returncode == 0, proc.stderr[-3000:]
        first_calls = server.calls
        kinds = set(server.kinds())
        assert {"precision", "recall", "entities", "present", "generate", "groundedness", "relevancy",
                "noise"} <= kinds

        results = json.loads((out / "results.json").read_text())
        judge = results["judge"]
        assert judge["model"] == "fake-judge"
        bm25 = next(s for s in results["systems"] if s["name"] == "bm25")
        for key in ("llm_context_precision@3", "llm_context_recall@5", "llm_context_entities_recall@3",
                    "string_presence@3", "rouge_l@3", "bleu4@3", "groundedness@3", "response_relevancy@3",
                    "noise_sensitivity@3"):
            assert key in bm25["metrics"], key
        assert bm25["metrics"]["groundedness@3"] == pytest.approx(0.5)
        assert bm25["metrics"]["noise_sensitivity@3"] == pytest.approx(0.5)
        assert bm25["metrics"]["response_relevancy@3"] > 0.5
        dense = next(s for s in results["systems"] if s["kind"] == "dense")
        assert "rouge_l@3" not in dense["metrics"]  # not in --answer_systems
        # Passage 2 was retrieved in someone's top 5: its malformed verdicts are counted and excluded.
        assert judge["failures"] > 0 and judge["retried"] >= judge["failures"]
        assert all(f["kind"] == "context_precision" and f["passage_id"] == "2" for f in judge["failed"])
        excluded = {k: v for s in results["systems"] for k, v in s["excluded"].items()}
        assert any(k.startswith("llm_context_precision@") for k in excluded)
        # The API keys are never written or printed; numbers whose flag names say "tokens" are not secrets.
        for secret in ("sk-secret-judge", "sk-secret-generator"):
            assert secret not in proc.stdout and secret not in proc.stderr
            for path in out.rglob("*"):
                if path.is_file():
                    assert secret.encode() not in path.read_bytes(), path
        config = results["config"]
        assert config["judge_api_key"] == config["generator_api_key"] == "<redacted>"
        assert config["hub_token"] is None
        assert config["judge_max_tokens"] == 512 and config["generator_max_new_tokens"] == 256
        answers = pd.read_csv(out / "answers.csv", encoding="utf-8-sig")
        assert len(answers) == 6 and set(answers["system"]) == {"bm25"}
        md = (out / "results.md").read_text()
        assert "llm_context_precision" in md and "## Judge" in md

        # Rerun: everything comes from the cache; the only calls are the two servers' checks before retrieval.
        server.reset()
        proc = run_script("evaluate_rag.py", *args)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert server.calls == 2
        rerun = json.loads((out / "results.json").read_text())
        for before, after in zip(results["systems"], rerun["systems"]):
            assert (after["metrics"], after["excluded"]) == (before["metrics"], before["excluded"])
        assert rerun["judge"]["requests"] == 0 and rerun["judge"]["failures"] == judge["failures"]
        assert first_calls > 0


@pytest.mark.parametrize("role", ["judge", "generator"])
def test_a_server_that_is_down_fails_before_retrieval_with_nothing_written(tmp_path, small_test_set, role):
    out = tmp_path / "eval"
    proc = run_script("evaluate_rag.py", *script_args(out, small_test_set, "--embedding_models",
                                                      f"--{role}_base_url", closed_port_url(), f"--{role}_model", "m"))
    assert proc.returncode == 2
    assert len(error_lines(proc)) == 1 and "Traceback" not in proc.stderr
    assert f"--{role}_base_url" in error_lines(proc)[0] and "cannot connect" in error_lines(proc)[0]
    assert "BM25: done" not in proc.stderr and not out.exists()


def test_a_judge_that_fails_mid_run_keeps_the_results(tmp_path, small_test_set):
    calls = []

    def responder(messages):  # answers the check before retrieval, then fails
        calls.append(1)
        return "OK" if len(calls) == 1 else (500, "internal error")

    out = tmp_path / "eval"
    with FakeOpenAI(responder) as server:
        proc = run_script("evaluate_rag.py", *script_args(out, small_test_set, "--embedding_models", "--judge_base_url",
                                                          server.base_url, "--judge_model", "m"))
    assert proc.returncode == 2
    assert len(error_lines(proc)) == 1 and "Traceback" not in proc.stderr
    assert "HTTP 500" in error_lines(proc)[0] and "saved" in error_lines(proc)[0]
    results = json.loads((out / "results.json").read_text())
    assert results["systems"][0]["metrics"]["ndcg@5"] >= 0  # ranking metrics were kept


def test_answers_come_from_the_baseline_and_the_best_system_unless_patterns_say_otherwise(models, small_test_set,
                                                                                         tmp_path):
    out = tmp_path / "eval"
    with FakeOpenAI() as server:
        args = script_args(out, small_test_set, "--embedding_models", str(models["st_a"]), str(models["st_b"]),
                           "--generator_base_url", server.base_url, "--generator_model", "g", "--answer_k", "3",
                           "--baseline", "tiny-st")
        proc = run_script("evaluate_rag.py", *args)
        assert proc.returncode == 0, proc.stderr[-3000:]
        best = json.loads((out / "systems.json").read_text())["best"]
        names = [s["name"] for s in json.loads((out / "results.json").read_text())["systems"]]
        assert len(names) == 7 and best != "tiny-st"
        assert set(pd.read_csv(out / "answers.csv", encoding="utf-8-sig")["system"]) == {"tiny-st", best}

        proc = run_script("evaluate_rag.py", *args, "--answer_systems", "*(rrf)", "bm25")
        assert proc.returncode == 0, proc.stderr[-3000:]
        answered = set(pd.read_csv(out / "answers.csv", encoding="utf-8-sig")["system"])
        assert answered == {n for n in names if n.endswith("(rrf)")} | {"bm25"} and len(answered) == 3


@pytest.mark.parametrize("flag, value", [("--answer_systems", "tiny-st + bm25 (rff)"), ("--baseline", "tiny_st")])
def test_a_system_name_that_will_not_exist_fails_before_retrieval(models, small_test_set, tmp_path, flag, value):
    out = tmp_path / "eval"
    with FakeOpenAI() as server:
        proc = run_script("evaluate_rag.py", *script_args(out, small_test_set, "--embedding_models",
                                                          str(models["st_a"]), "--generator_base_url",
                                                          server.base_url, "--generator_model", "g", flag, value))
    assert proc.returncode == 2
    assert len(error_lines(proc)) == 1 and "Traceback" not in proc.stderr
    line = error_lines(proc)[0]
    assert f"{flag} {value!r}" in line and "tiny-st + bm25 (weighted <weight>)" in line, line
    assert "BM25: done" not in proc.stderr and not out.exists()


@pytest.mark.parametrize("mode", ["garbage_body", "garbage_content", "http500"])
def test_script_generator_or_judge_garbage_exits_2(tmp_path, small_test_set, mode):
    def responder(messages):
        if mode == "garbage_body":
            return (200, "<html>hello</html>")
        if mode == "http500":
            return (500, "internal error")
        return "lorem ipsum dolor"  # never parseable: every judgement fails

    out = tmp_path / "eval"
    with FakeOpenAI(responder) as server:
        flags = (["--generator_base_url", server.base_url, "--generator_model", "g"] if mode == "garbage_body" else
                 ["--judge_base_url", server.base_url, "--judge_model", "j", "--no_entities"])
        proc = run_script("evaluate_rag.py", *script_args(out, small_test_set, "--embedding_models", *flags))
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = error_lines(proc)
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    expected = {"garbage_body": "not an OpenAI chat completion", "http500": "HTTP 500",
                "garbage_content": "malformed after a retry"}[mode]
    assert re.search(expected, lines[0]), lines[0]
    # A server that answers garbage from the start fails its check, before anything is written; one whose answers
    # are well-formed but useless is found out mid-run, and the results computed so far are kept.
    assert (out / "results.json").exists() == (mode == "garbage_content")


def test_script_local_generator(tiny_gpt2, tmp_path, small_test_set):
    folder, adapter = tiny_gpt2
    out = tmp_path / "eval"
    proc = run_script("evaluate_rag.py", *script_args(out, small_test_set, "--embedding_models", "--generator_local",
                                                      str(folder), "--generator_adapter", str(adapter),
                                                      "--generator_max_new_tokens", "5", "--answer_k", "3", "5"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "results.json").read_text())["systems"][0]["metrics"]
    for key in ("string_presence@3", "rouge_l@5", "bleu4@3"):
        assert 0.0 <= metrics[key] <= 1.0
    assert "groundedness@3" not in metrics  # no judge, no judged answer metrics
    assert len(pd.read_csv(out / "answers.csv", encoding="utf-8-sig")) == 12

"""LLM judge and generator: parsing, retry, failures, disk cache, endpoint errors, answer metrics.

Everything runs against tests/fake_openai.py on 127.0.0.1: no network.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_script
from fake_openai import FakeOpenAI, closed_port_url, default_responder, prompt_kind
from ragtune.core.answer_metrics import UnicodeWordTokenizer, bleu4, rouge_l, string_presence
from ragtune.core.data import SAMPLE_TEST
from ragtune.core.errors import UserError
from ragtune.evaluate.judge import Judge, split_sentences
from ragtune.evaluate.llm_cache import CachedLLM, LLMCache
from ragtune.evaluate.llm_client import EndpointError, OpenAIChatClient, chat_url
from ragtune.evaluate.llm_parsing import (ParseError, extract_json, parse_claims, parse_index_list, parse_questions,
                                 parse_verdict)

# ---------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text, expected", [
    ('{"reason": "x", "verdict": 1}', 1),
    ('```json\n{"reason": "no", "verdict": 0}\n```', 0),
    ('Sure! Here is my answer:\n{"verdict": "1"}', 1),
    ('{"verdict": "yes"}', 1),
    ("1", 1),
    ("0", 0),
    ("Yes.", 1),
    ("no", 0),
    ("<think>hmm, verdict 0 or 1?</think>\n1", 1),
    ('"verdict": 0, because', 0),
    ("Có", 1),
])
def test_parse_verdict_accepts_common_shapes(text, expected):
    assert parse_verdict(text) == expected


@pytest.mark.parametrize("text", ["", "I think so", '{"reason": "only a reason"}', "maybe", '{"verdict": 7}',
                                  "yes and no"])
def test_parse_verdict_rejects_malformed(text):
    with pytest.raises(ParseError):
        parse_verdict(text)


def test_parse_lists_and_claims():
    assert parse_index_list('{"attributed": [1, 3]}', 3, ("attributed",)) == {1, 3}
    assert parse_index_list("```\n[2]\n```", 3, ("attributed",)) == {2}
    assert parse_index_list("1, 2", 2, ("attributed",)) == {1, 2}
    assert parse_index_list("none", 2, ("attributed",)) == set()
    assert parse_index_list('{"attributed": []}', 2, ("attributed",)) == set()
    with pytest.raises(ParseError):
        parse_index_list('{"attributed": [4]}', 3, ("attributed",))  # out of range
    with pytest.raises(ParseError):
        parse_index_list("the first one", 3, ("attributed",))
    claims = parse_claims('{"claims": [{"claim": "a", "correct": "yes", "supported_by": [2]}]}',
                          {"correct": "flag", "supported_by": "indices"}, 3)
    assert claims == [{"claim": "a", "correct": 1, "supported_by": [2]}]
    with pytest.raises(ParseError):
        parse_claims('{"claims": [{"claim": "a"}]}', {"supported": "flag"})
    assert parse_questions('{"questions": ["q1", "q2"], "noncommittal": 0}') == (["q1", "q2"], 0)
    assert parse_questions('{"questions": [], "noncommittal": 1}') == ([], 1)
    assert extract_json('text {"a": {"b": "}"}} more') == {"a": {"b": "}"}}


def test_split_sentences_keeps_abbreviations():
    text = "TS. Hồ Quang Huy là cố vấn. Phí là 500.000 đồng! Còn gì nữa?"
    assert split_sentences(text) == ["TS. Hồ Quang Huy là cố vấn.", "Phí là 500.000 đồng!", "Còn gì nữa?"]


def test_chat_url():
    assert chat_url("http://localhost:8000") == "http://localhost:8000/v1/chat/completions"
    assert chat_url("http://localhost:11434/v1/") == "http://localhost:11434/v1/chat/completions"
    assert chat_url("https://api.example.com/openai/v1") == "https://api.example.com/openai/v1/chat/completions"
    with pytest.raises(ValueError):
        chat_url("localhost:8000")


# ---------------------------------------------------------------------------- client, retry, cache


def make_judge(server_url: str, cache_path: Path | None, retries: int = 1) -> Judge:
    client = OpenAIChatClient(server_url, "fake-judge", "sk-test", retries=retries, backoff=0.01, timeout=5)
    return Judge(CachedLLM(client, LLMCache(cache_path)), workers=2)


def test_malformed_answer_is_retried_once_then_counted(tmp_path):
    answers = {"first": 0}

    def responder(messages):
        text = messages[1]["content"]
        retry = len(messages) > 2
        if "good" in text:
            return '{"verdict": 1}'
        if "fixed" in text:  # malformed, then fine on the retry
            return '{"verdict": 0}' if retry else "Let me think about it."
        answers["first"] += 1
        return "I cannot say."  # malformed both times

    with FakeOpenAI(responder) as server:
        judge = make_judge(server.base_url, tmp_path / "cache.jsonl")
        ask = lambda word: judge.ask([{"role": "system", "content": "s"}, {"role": "user", "content": word}],  # noqa
                                     parse_verdict, "context_precision", query_row=2, passage_id="7")
        assert ask("good") == 1
        assert ask("fixed") == 0
        assert ask("broken") is None  # never a silent 0
        assert server.calls == 1 + 2 + 2
        assert judge.retried == 2
        assert len(judge.failures) == 1
        failure = judge.failures[0]
        assert (failure.kind, failure.query_row, failure.passage_id) == ("context_precision", 2, "7")
        assert server.requests[0]["authorization"] == "Bearer sk-test"
        assert server.requests[0]["body"]["temperature"] == 0.0
        summary = judge.summary()
        assert summary["failures"] == 1 and summary["retried"] == 2

        # Rerun from the disk cache: same results, same failure count, zero calls.
        server.reset()
        again = make_judge(server.base_url, tmp_path / "cache.jsonl")
        ask2 = lambda word: again.ask([{"role": "system", "content": "s"}, {"role": "user", "content": word}],  # noqa
                                      parse_verdict, "context_precision", query_row=2, passage_id="7")
        assert [ask2("good"), ask2("fixed"), ask2("broken")] == [1, 0, None]
        assert server.calls == 0
        assert len(again.failures) == 1 and again.llm.cache_hits == 5


def test_cache_survives_a_truncated_line(tmp_path):
    path = tmp_path / "cache.jsonl"
    cache = LLMCache(path)
    cache.put("k1", "one", {"model": "m"})
    with open(path, "a") as handle:
        handle.write('{"key": "k2", "resp')  # a crash mid-write
    assert LLMCache(path).get("k1") == "one"
    assert LLMCache(path).get("k2") is None


def test_endpoint_down_is_a_user_error():
    client = OpenAIChatClient(closed_port_url(), "m", retries=1, backoff=0.01, timeout=2)
    with pytest.raises(EndpointError, match="cannot connect"):
        client.complete([{"role": "user", "content": "hi"}])
    assert isinstance(EndpointError("x"), UserError)


@pytest.mark.parametrize("reply, match", [
    ((500, "boom"), "HTTP 500"),
    ((429, "slow down"), "HTTP 429"),
    ((200, "<html>not json</html>"), "not an OpenAI chat completion"),
    ((200, '{"data": []}'), "not an OpenAI chat completion"),
])
def test_server_errors_are_retried_then_reported(reply, match):
    with FakeOpenAI(lambda messages: reply) as server:
        client = OpenAIChatClient(server.base_url, "m", retries=2, backoff=0.01, timeout=5)
        with pytest.raises(EndpointError, match=match):
            client.complete([{"role": "user", "content": "hi"}])
        assert server.calls == 3


def test_client_error_is_not_retried():
    with FakeOpenAI(lambda messages: (404, '{"error": {"message": "model not found"}}')) as server:
        client = OpenAIChatClient(server.base_url, "nope", retries=3, backoff=0.01, timeout=5)
        with pytest.raises(EndpointError, match="HTTP 404.*model not found"):
            client.complete([{"role": "user", "content": "hi"}])
        assert server.calls == 1


# ---------------------------------------------------------------------------- answer metrics


def test_rouge_l_keeps_vietnamese_diacritics():
    from rouge_score import rouge_scorer

    a = "Người dẫn đầu được thưởng một chiếc cúp."
    b = "Buổi họp diễn ra vào thứ bảy hằng tuần."
    default = rouge_scorer.RougeScorer(["rougeL"]).score(a, b)["rougeL"].fmeasure
    ours = rouge_l(a, b)
    # The stock tokenizer keeps only [a-z0-9]: "người" -> "ng", "i"; fragments of unrelated words match.
    assert default > 0.25
    assert ours == 0.0
    assert rouge_l(a, a) == pytest.approx(1.0)
    assert UnicodeWordTokenizer().tokenize("Được THƯỞNG 30 triệu!") == ["được", "thưởng", "30", "triệu"]
    # NFD input (Word/Excel) equals NFC.
    import unicodedata

    assert rouge_l(unicodedata.normalize("NFD", a), a) == pytest.approx(1.0)


def test_bleu_and_string_presence():
    refs = ["CLB được thành lập ngày 14 tháng 10 năm 2013.", "Phí tham gia là 500.000 đồng mỗi học sinh."]
    assert bleu4(refs, refs) == pytest.approx(1.0)
    assert 0.0 <= bleu4(["Không biết.", "Phí là 500.000 đồng."], refs) < 0.5
    assert string_presence("Theo tài liệu, phí là 500.000 đồng mỗi học sinh!", "500.000 đồng mỗi học sinh") == 1.0
    assert string_presence("Không biết", "500.000 đồng") == 0.0
    assert string_presence("anything", "") == 0.0


# ---------------------------------------------------------------------------- local generator


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    """A 2-layer random GPT-2 with the tiny WordPiece tokenizer, and a LoRA adapter for it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    from tiny_models import CHATML_TEMPLATE, build_tokenizer

    folder = tmp_path_factory.mktemp("gen") / "tiny-gpt2"
    folder.mkdir()
    tokenizer = build_tokenizer(folder)
    tokenizer.chat_template = CHATML_TEMPLATE  # a generator needs a chat template (its training prompt's format)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=1024,
                        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    adapter = folder.parent / "lora"
    peft_model = get_peft_model(GPT2LMHeadModel.from_pretrained(folder),
                                LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"], init_lora_weights=False))
    peft_model.save_pretrained(adapter)
    return folder, adapter


def test_local_generator_with_lora_is_cached(tiny_gpt2, tmp_path):
    from ragtune.evaluate.answers import LocalGenerator, answer_messages

    folder, adapter = tiny_gpt2
    cache = LLMCache(tmp_path / "cache.jsonl")
    prompts = [answer_messages("CLB thành lập năm nào?", ["CLB ra đời năm 2013."]),
               answer_messages("Phí bao nhiêu?", ["Phí là 500.000 đồng."])]
    gen = LocalGenerator(str(folder), str(adapter), cache, max_new_tokens=6, batch_size=2)
    first = gen.generate(prompts)
    assert len(first) == 2 and all(isinstance(a, str) for a in first)
    assert gen.requests == 2 and "lora:" in gen.model_id
    again = LocalGenerator(str(folder), str(adapter), LLMCache(tmp_path / "cache.jsonl"), max_new_tokens=6)
    assert again.generate(prompts) == first
    assert again.requests == 0 and again._model is None  # nothing loaded, nothing generated
    plain = LocalGenerator(str(folder), None, cache, max_new_tokens=6)
    assert plain.model_id != gen.model_id  # the adapter is part of the cache key
    with pytest.raises(UserError, match="--generator_adapter"):
        LocalGenerator(str(folder), str(tmp_path), cache)


# ---------------------------------------------------------------------------- the script with a judge


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

        # Rerun: everything comes from the cache.
        server.reset()
        proc = run_script("evaluate_rag.py", *args)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert server.calls == 0
        rerun = json.loads((out / "results.json").read_text())
        for before, after in zip(results["systems"], rerun["systems"]):
            assert (after["metrics"], after["excluded"]) == (before["metrics"], before["excluded"])
        assert rerun["judge"]["requests"] == 0 and rerun["judge"]["failures"] == judge["failures"]
        assert first_calls > 0


def test_script_judge_down_keeps_results(tmp_path, small_test_set):
    out = tmp_path / "eval"
    proc = run_script("evaluate_rag.py", *script_args(out, small_test_set, "--embedding_models",
                                                      "--judge_base_url", closed_port_url(), "--judge_model", "m"))
    assert proc.returncode == 2
    assert len(error_lines(proc)) == 1 and "Traceback" not in proc.stderr
    assert "cannot connect" in error_lines(proc)[0] and "saved" in error_lines(proc)[0]
    results = json.loads((out / "results.json").read_text())
    assert results["systems"][0]["metrics"]["ndcg@5"] >= 0  # ranking metrics were kept


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
    assert (out / "results.json").exists()


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

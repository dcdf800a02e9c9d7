"""LLM judge and generator: parsing, retry, failures, disk cache, endpoint errors, the local generator.

Everything runs against tests/fake_openai.py on 127.0.0.1: no network.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_openai import FakeOpenAI, closed_port_url

from ragtune.core.errors import UserError
from ragtune.evaluate.judge import Judge, split_sentences
from ragtune.evaluate.llm_parsing import (
    ParseError,
    extract_json,
    parse_claims,
    parse_index_list,
    parse_questions,
    parse_verdict,
)
from ragtune.generation.llm_cache import CachedLLM, LLMCache
from ragtune.generation.llm_client import EndpointError, OpenAIChatClient, chat_url

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


# ---------------------------------------------------------------------------- local generator


def test_local_generator_with_lora_is_cached(tiny_gpt2, tmp_path, monkeypatch):
    import ragtune.generation.inference
    from ragtune.generation.generators import LocalGenerator, answer_messages

    folder, adapter = tiny_gpt2
    cache = LLMCache(tmp_path / "cache.jsonl")
    prompts = [answer_messages("CLB thành lập năm nào?", ["CLB ra đời năm 2013."]),
               answer_messages("Phí bao nhiêu?", ["Phí là 500.000 đồng."])]
    gen = LocalGenerator(str(folder), str(adapter), cache, max_new_tokens=6, batch_size=2)
    first = gen.generate(prompts)
    assert len(first) == 2 and all(isinstance(a, str) for a in first)
    assert gen.requests == 2 and "lora:" in gen.model_id
    loaded = []

    def no_loading(*args, **kwargs):  # every answer is in the cache: the model must not even be loaded
        loaded.append(args)
        raise AssertionError("the generator was loaded although every answer was cached")

    # Where LocalGenerator finds the loader: ragtune.generation.inference's (imported when it loads).
    monkeypatch.setattr(ragtune.generation.inference, "load_generator", no_loading)
    again = LocalGenerator(str(folder), str(adapter), LLMCache(tmp_path / "cache.jsonl"), max_new_tokens=6)
    assert again.generate(prompts) == first
    assert again.requests == 0 and loaded == []  # nothing loaded, nothing generated
    plain = LocalGenerator(str(folder), None, cache, max_new_tokens=6)
    assert plain.model_id != gen.model_id  # the adapter is part of the cache key
    with pytest.raises(UserError, match="--generator_adapter"):
        LocalGenerator(str(folder), str(tmp_path), cache)

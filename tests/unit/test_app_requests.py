"""The ask page's JSON endpoint over a BM25 pipeline: answers as the pipeline ranks, and a bad request (empty
question, unknown system, bad k, not JSON) is a 400 with one plain sentence, the server serving on."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest

from ragtune.app import AskService, listen, make_handler
from ragtune.core.data import SAMPLE_CORPUS, SAMPLE_TEST, load_corpus, load_queries
from ragtune.pipeline import RAGPipeline
from ragtune.pipeline.spec import SystemSpec
from ragtune.pipeline.stages import PipelineParts


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    corpus = load_corpus(SAMPLE_CORPUS)
    pipeline = RAGPipeline(SystemSpec("bm25", "bm25"), PipelineParts(corpus, tmp_path_factory.mktemp("cache")))
    server = listen("127.0.0.1", 0)
    server.RequestHandlerClass = make_handler(AskService(pipeline, {}, default_k=3))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", pipeline
    server.shutdown()
    server.server_close()


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url + "/api/ask", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def test_a_question_gets_the_pipelines_passages(app):
    url, pipeline = app
    query = load_queries(SAMPLE_TEST, load_corpus(SAMPLE_CORPUS))[0].query
    status, body = post(url, json.dumps({"question": query, "k": "4"}).encode())
    assert status == 200 and body["system"] == "bm25" and body["answer"] is None
    assert [p["id"] for p in body["passages"]] == [p.id for p in pipeline.retrieve(query, 4)]
    assert set(body["passages"][0]["stage_scores"]) == {"bm25"}
    with urllib.request.urlopen(url + "/api/systems", timeout=30) as response:
        assert json.load(response) == {"systems": ["bm25"], "current": "bm25", "k": 3, "generator": False,
                                       "passages": len(pipeline.corpus)}


@pytest.mark.parametrize("body, message", [
    ({"question": "   "}, "the question is empty"),
    ({"question": "x" * 2001}, "the question is longer than 2000 characters"),
    ({"question": "clb", "system": "nope"}, "unknown system 'nope'; the systems: bm25"),
    ({"question": "clb", "system": ["bm25"]}, "system must be a system's name, got ['bm25']"),
    ({"question": "clb", "k": "abc"}, "k must be a whole number of passages, got 'abc'"),
    ({"question": "clb", "k": 2.5}, "k must be a whole number of passages, got 2.5"),
    ({"question": "clb", "k": 0}, "k must be in 1..50, got 0"),
    (b"{not json", "send a JSON object {question, system, k}"),
    ([1, 2], "send a JSON object {question, system, k}"),
])
def test_a_bad_request_is_a_400_with_one_plain_sentence(app, body, message):
    url, _ = app
    status, reply = post(url, body if isinstance(body, bytes) else json.dumps(body).encode())
    assert (status, reply) == (400, {"error": message})
    assert post(url, b'{"question": "clb"}')[0] == 200  # still serving

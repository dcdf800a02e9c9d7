"""The RAG pipeline object: stages, scores, query expansion, generator, systems.json (no subprocess, no training)."""

from __future__ import annotations

import json
import logging

import pytest
from fake_openai import FakeOpenAI, closed_port_url

from ragtune.core.bm25 import BM25Index
from ragtune.core.data import SAMPLE_CORPUS, SAMPLE_TEST, load_corpus, load_queries
from ragtune.core.errors import UserError
from ragtune.core.expansions import QueryExpander
from ragtune.core.model_specs import ModelSpec
from ragtune.core.ranking import bm25_top_k, tie_ranks
from ragtune.generation.generators import EndpointOptions, GeneratorSettings, answer_messages
from ragtune.pipeline import PipelineParts, RAGPipeline, SystemSpec
from ragtune.pipeline.spec import ModelSettings, best_system, choose_expansions, read_evaluation, write_systems
from ragtune.retrieval.first_stage import HybridFusion

CLB = QueryExpander({"clb": "câu lạc bộ"}, source="test map")


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(SAMPLE_CORPUS)


@pytest.fixture(scope="module")
def queries(corpus):
    return [q.query for q in load_queries(SAMPLE_TEST, corpus, flag="--test_data")]


def test_bm25_pipeline_ranks_as_bm25_with_each_stage_score(corpus, queries, tmp_path):
    rag = RAGPipeline(SystemSpec("bm25", "bm25"), PipelineParts(corpus, tmp_path))
    idx, scores = bm25_top_k(BM25Index(corpus.texts), queries, 5, tie_ranks(corpus.ids))
    for qi, passages in enumerate(rag.retrieve_batch(queries, 5)):
        assert [p.id for p in passages] == [corpus.ids[i] for i in idx[qi]]
        assert [p.score for p in passages] == pytest.approx(list(scores[qi]))
        assert [p.rank for p in passages] == [1, 2, 3, 4, 5]
        assert all(p.stage_scores == {"bm25": p.score} and p.text == corpus.text(p.id) for p in passages)
    assert [p.id for p in rag.retrieve(queries[3], 5)] == [corpus.ids[i] for i in idx[3]]


def test_the_first_stage_sees_the_expanded_query(corpus, queries, tmp_path):
    parts = PipelineParts(corpus, tmp_path)
    plain = RAGPipeline(SystemSpec("bm25", "bm25"), parts)
    expanded = RAGPipeline(SystemSpec("bm25", "bm25").with_expansions(CLB), parts)
    with_clb = [q for q in queries if "CLB" in q]
    assert expanded.first_stage_queries(with_clb) == CLB.expand_all(with_clb) != with_clb
    rows = plain.rank(CLB.expand_all(with_clb), 7).ranked
    assert expanded.rank(with_clb, 7).ranked == rows != plain.rank(with_clb, 7).ranked


def test_hybrid_rerank_and_fused_lists_are_prefixes_of_deeper_ones(corpus, queries, tiny_st, tiny_cross_encoder,
                                                                   tmp_path):
    """A pipeline asked for k passages gives the top k of evaluate_rag.py's deeper lists: what predictions equal."""
    embedding = ModelSettings.of(ModelSpec(str(tiny_st), "--e", "st", tiny_st, None, "h1"), 64, "", "")
    reranker = ModelSettings.of(ModelSpec(str(tiny_cross_encoder), "--r", "ce", tiny_cross_encoder, None, "h2"), 96)
    parts = PipelineParts(corpus, tmp_path)
    hybrid = SystemSpec("h", "hybrid", embedding, HybridFusion(dense_weight=0.3))
    fused = SystemSpec("f", "hybrid", embedding, HybridFusion(dense_weight=0.3), reranker, 12, 0.6)
    for spec in (hybrid, fused):
        rag = RAGPipeline(spec, parts)
        deep = rag.rank(queries, 30)
        shallow = RAGPipeline(spec, PipelineParts(corpus, tmp_path)).rank(queries, 5)
        assert shallow.ranked == [row[:5] for row in deep.ranked]
        assert shallow.scores == [row[:5] for row in deep.scores]
    passage = RAGPipeline(fused, parts).retrieve(queries[0], 3)[0]
    assert set(passage.stage_scores) == {"dense", "bm25", "hybrid", "reranker", "fused"}
    assert passage.score == passage.stage_scores["fused"]


def test_a_system_survives_systems_json(tmp_path):
    embedding = ModelSettings("m", "/x/m", "abc", None, "m", 64, "q: ", "p: ")
    spec = SystemSpec("m + bm25 (weighted 0.3) + r (fused 0.6)", "hybrid", embedding,
                      HybridFusion(dense_weight=0.3, depth=50), ModelSettings("r", None, "def", None, "r", 96), 12,
                      0.6, notes={"weight_from": "metrics.json"}).with_expansions(CLB)
    write_systems(tmp_path, [SystemSpec("bm25", "bm25"), spec], {"path": "c.csv"}, "ndcg@5", spec.name,
                  GeneratorSettings(base_url="http://x/v1", model="g").record(), {"batch_size": 8})
    evaluation = read_evaluation(tmp_path)
    assert evaluation.system("best") == spec and evaluation.system("bm25").kind == "bm25"
    assert spec.kind == "fused_rerank" and evaluation.system(spec.name).expander().fingerprint() == CLB.fingerprint()
    assert evaluation.generator == {"kind": "endpoint", "base_url": "http://x/v1", "model": "g", "max_new_tokens": 256}
    assert "key" not in json.dumps(json.loads((tmp_path / "systems.json").read_text())["generator"])
    with pytest.raises(UserError, match=r"--system 'nope' is not a system .*best \(.*\), bm25, m \+ bm25"):
        evaluation.system("nope")


def test_no_evaluation_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="holds no evaluation: no systems.json"):
        read_evaluation(tmp_path)
    with pytest.raises(UserError, match="no such folder"):
        read_evaluation(tmp_path / "missing")


def test_best_is_the_highest_main_metric_first_of_equals():
    assert best_system(["a", "b", "c", "d"], [0.5, 0.7, None, 0.7]) == "b"
    assert best_system(["a"], [None]) is None


def test_an_explicit_map_wins_over_a_saved_one_with_a_warning(tmp_path, caplog):
    emb, rr = tmp_path / "emb", tmp_path / "rr"
    QueryExpander({"clb": "câu lạc bộ"}).save(emb)
    QueryExpander({"ctv": "cộng tác viên"}).save(rr)
    specs = [ModelSpec("emb", "--e", "emb", emb), ModelSpec("rr", "--r", "rr", rr)]
    explicit = QueryExpander({"hđ": "hoạt động"}, source="--expansions x.csv")
    with caplog.at_level(logging.WARNING):
        assert choose_expansions(explicit, specs) is explicit
    assert sum("differs from --expansions" in r.getMessage() for r in caplog.records) == 2
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        chosen = choose_expansions(None, specs)
    assert chosen("CLB") == "CLB (câu lạc bộ)"  # the first stage's model's map
    assert any("saved different query expansion maps: emb's is applied" in r.getMessage() for r in caplog.records)
    assert choose_expansions(None, [None, specs[1]])("ctv") == "ctv (cộng tác viên)"
    assert choose_expansions(None, [ModelSpec("m", "--e")]) is None


def test_answers_are_prompted_as_in_training_and_a_dead_endpoint_fails_first(corpus, tmp_path):
    prompts = []

    def responder(messages):
        prompts.append(messages)
        return "answer"

    with FakeOpenAI(responder) as server:
        rag = RAGPipeline.from_models(corpus, generator=GeneratorSettings(base_url=server.base_url, model="g"),
                                      cache_dir=tmp_path)
        rag.check_generator("q")
        answer = rag.answer("CLB có mấy ban?", k=3)
        assert answer.answer == "answer" and [p.rank for p in answer.contexts] == [1, 2, 3]
        assert prompts[-1] == answer_messages("CLB có mấy ban?", [p.text for p in answer.contexts])
        again = RAGPipeline.from_models(corpus, generator=GeneratorSettings(base_url=server.base_url, model="g"),
                                        cache_dir=tmp_path)
        calls = server.calls
        assert again.answer("CLB có mấy ban?", k=3).answer == "answer" and server.calls == calls  # cached
    dead = RAGPipeline.from_models(corpus, generator=GeneratorSettings(base_url=closed_port_url(), model="g"),
                                   endpoint=EndpointOptions(retries=0), cache_dir=tmp_path)
    with pytest.raises(UserError, match="--generator_base_url .*cannot connect"):
        dead.check_generator("q")
    with pytest.raises(UserError, match="no generator"):
        RAGPipeline.from_models(corpus, cache_dir=tmp_path).answer("q")

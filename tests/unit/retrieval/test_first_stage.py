"""The first stage every later stage sees: BM25, dense or a hybrid of both."""

from __future__ import annotations

import pytest

from ragtune.core.data import SAMPLE_CORPUS, load_corpus
from ragtune.core.errors import UserError
from ragtune.retrieval.first_stage import FirstStage


def test_hybrid_first_stage_needs_an_embedding_model():
    corpus = load_corpus(SAMPLE_CORPUS)
    with pytest.raises(UserError, match="--first_stage hybrid needs --embedding_model"):
        FirstStage(corpus, None, kind="hybrid")


def test_hybrid_fusion_applies_its_weight_at_its_own_depth_only():
    from ragtune.core.fusion import ranking
    from ragtune.retrieval.first_stage import HybridFusion

    dense = [{f"p{i}": 10.0 - i for i in range(8)}]
    bm25 = [{f"p{7 - i}": 5.0 - 0.5 * i for i in range(8)}]
    fusion = HybridFusion("weighted", 0.7, depth=5)
    at_depth = fusion.fuse([{k: v for k, v in list(dense[0].items())[:5]}], [dict(list(bm25[0].items())[:5])], 100)
    # Deeper inputs are cut to the depth: the same fused scores as inputs of exactly that depth.
    assert fusion.fuse(dense, bm25, 100) == at_depth
    # A shallower input would apply the weight at another depth: refused.
    with pytest.raises(ValueError, match="depth 5 needs the top 5"):
        fusion.fuse([dict(list(dense[0].items())[:3])], bm25, 100)
    # A corpus smaller than the depth fuses all of it.
    assert fusion.candidates(4) == 4 and ranking(fusion.fuse(dense, bm25, 8)[0])
    # Depth changes the result: min-max normalisation depends on the candidates normalised.
    assert HybridFusion("weighted", 0.7, depth=8).fuse(dense, bm25, 100) != at_depth


def test_saved_fusion_round_trips_and_old_records_mean_depth_100(tmp_path):
    import json

    from ragtune.retrieval.first_stage import HybridFusion

    fusion = HybridFusion("weighted", 0.3, 40)
    (tmp_path / "metrics.json").write_text(json.dumps({"fusion": {**fusion.record(), "rule": "one_se"}}))
    assert HybridFusion.saved(tmp_path) == fusion
    (tmp_path / "metrics.json").write_text(json.dumps({"fusion": {"first_stage": "hybrid", "dense_weight": 0.8}}))
    assert HybridFusion.saved(tmp_path) == HybridFusion("weighted", 0.8, 100)
    assert HybridFusion.saved(tmp_path / "missing") is None and HybridFusion.saved(None) is None


def test_first_stage_top_k_is_a_prefix_of_any_deeper_top_k(tiny_st):
    from sentence_transformers import SentenceTransformer

    from ragtune.core.data import SAMPLE_TRAIN, load_queries

    corpus = load_corpus(SAMPLE_CORPUS)
    texts = [q.query for q in load_queries(SAMPLE_TRAIN, corpus)[:10]]
    stage = FirstStage(corpus, SentenceTransformer(str(tiny_st), device="cpu"), kind="hybrid")
    for kind in ("bm25", "dense", "hybrid"):
        deep, shallow = stage.rankings(texts, 30, kind), stage.rankings(texts, 7, kind)
        assert [row[:7] for row in deep] == shallow


def test_an_expander_rewrites_every_query_the_first_stage_sees():
    """--expansions: BM25, dense and hybrid retrieve for the expanded query, exactly as for a pre-expanded text."""
    from ragtune.core.data import SAMPLE_CORPUS, load_corpus
    from ragtune.core.expansions import QueryExpander

    corpus = load_corpus(SAMPLE_CORPUS)
    expander = QueryExpander([("clb", "câu lạc bộ robotics")])
    queries = ["CLB thành lập năm nào?", "Ai là chủ nhiệm clb?"]
    expanded = FirstStage(corpus, expander=expander)
    plain = FirstStage(corpus)
    assert expanded.runs(queries, 10) == plain.runs([expander(q) for q in queries], 10)
    assert expanded.runs(queries, 10) != plain.runs(queries, 10)

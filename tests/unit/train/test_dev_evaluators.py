"""The training scripts' dev evaluators rank and score as evaluate_rag.py does, exact ties included."""

from __future__ import annotations

import numpy as np

from ragtune.core.data import Corpus, LabelledQuery
from ragtune.core.fusion import ranking
from ragtune.core.model_specs import ModelSpec
from ragtune.core.ranking import rerank_order, tie_ranks
from ragtune.evaluate.systems import RerankScores, bm25_system, dense_system, rerank_systems, score_system
from ragtune.retrieval.embedding_store import EmbeddingModelHandle, EmbeddingRun
from ragtune.retrieval.first_stage import FirstStage
from ragtune.train.embedder.evaluator import DevRetrievalEvaluator
from ragtune.train.reranker.evaluator import DevRerankingEvaluator


class FixedEncoder:
    """A stand-in embedding model: each text has a hand-made vector, so dot products tie exactly."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors

    def encode(self, texts, convert_to_tensor=False, **_):
        import torch

        array = np.asarray([self.vectors[t] for t in texts], dtype=np.float32)
        return torch.from_numpy(array) if convert_to_tensor else array

    encode_query = encode_document = encode


class FixedHandle(EmbeddingModelHandle):
    """An embedding model handle whose model is the given stand-in (nothing to load)."""

    def __init__(self, run: EmbeddingRun, encoder) -> None:
        super().__init__(run, device=None)
        self.encoder = encoder

    def model(self):
        return self.encoder


class FixedScorer:
    """A stand-in cross-encoder: every pair gets the same logit."""

    def predict(self, pairs, **_):
        return np.zeros(len(pairs), dtype=np.float32)


def test_dev_evaluators_break_ties_as_evaluate_rag_does(tmp_path):
    """Exact ties: the training scripts' dev evaluators rank as evaluate_rag.py does (trec order, id descending)."""
    # Passages "1" and "3" tie for the query (and so do "2" and "4"); trec order puts "3" before "1".
    corpus = Corpus(ids=["1", "2", "3", "4"], texts=["alpha", "beta", "gamma", "delta"])
    vectors = {"alpha": [1, 0], "beta": [0, 1], "gamma": [1, 0], "delta": [0, 1], "q": [1, 0], "zzz": [0, 1]}
    queries = [LabelledQuery("q", ["3"]), LabelledQuery("zzz", ["4"])]
    ks = (1, 2, 3)
    encoder = FixedEncoder(vectors)

    dev = DevRetrievalEvaluator(corpus, queries, ks=ks).compute(encoder)
    handle = FixedHandle(EmbeddingRun(ModelSpec("fixed", "--x", path=tmp_path, fingerprint="f"), "", "", None),
                         encoder)
    tie_rank = tie_ranks(corpus.ids)
    dense = dense_system(handle, corpus, queries, 4, tie_rank, tmp_path / "cache", chunk_size=3)
    assert [dense.ranked_ids(corpus, qi) for qi in range(2)] == [["3", "1", "4", "2"], ["4", "2", "3", "1"]]
    score_system(dense, corpus, queries, ks)
    assert dev == {key: dense.metrics[key] for key in dev}
    assert dev["hit@1"] == 1.0  # lower-index-first would have put "1" (not relevant) first

    # The reranker script's first stage (BM25: no query term matches, every score ties) and its reranking.
    bm25 = bm25_system(corpus, queries, 4, tie_rank, chunk_size=3)
    first_stage = [ranking(run) for run in FirstStage(corpus).runs([q.query for q in queries], 4)]
    assert first_stage == [bm25.ranked_ids(corpus, qi) for qi in range(2)]
    candidates = [bm25.ranked_ids(corpus, qi) for qi in range(2)]
    scorer = RerankScores(ModelSpec("fixed-ce", "--y"), None, None)
    scorer.scores = {RerankScores.pair_key(q.query, corpus.text(pid)): 0.0 for q, c in zip(queries, candidates)
                     for pid in c}
    (reranked,) = rerank_systems([bm25], scorer, corpus, queries, 4, None, 8)
    evaluator = DevRerankingEvaluator(corpus, queries, candidates, ks=ks)
    assert evaluator.rerank(FixedScorer()) == [reranked.ranked_ids(corpus, qi) for qi in range(2)] == candidates
    assert rerank_order([0.5, 0.9, 0.5, float("nan")]) == [1, 0, 2, 3]

"""The first stage: BM25, dense or a hybrid of both over one corpus, the candidates every later stage sees."""

from __future__ import annotations

from typing import Sequence

from ragtune.core.bm25 import BM25Index
from ragtune.core.data import Corpus, LabelledQuery
from ragtune.core.errors import UserError
from ragtune.core.fusion import DEFAULT_METRIC, choose_weight, fuse_all, ranking, run_from_arrays
from ragtune.core.ranking import bm25_top_k, dense_top_k, tie_ranks
from ragtune.retrieval.encoding import encode_passages, encode_queries
from ragtune.retrieval.negatives import DEFAULT_DENSE_WEIGHT, NegativeCandidates, mine_candidates


class FirstStage:
    """The retriever whose top-N the reranker reorders; the corpus is indexed and encoded once.

    ``kind`` "bm25", "dense" (the ``embedding_model``, a fine-tuned SentenceTransformer) or "hybrid"
    (both, scores fused with ``dense_weight``; :meth:`choose_dense_weight` picks it on dev queries).
    Default: dense when an embedding model is given, else BM25. The same index and passage
    embeddings serve hard-negative mining.
    """

    # Candidates taken from each of BM25 and the dense model before a hybrid fuses them.
    HYBRID_DEPTH = 100

    def __init__(self, corpus: Corpus, embedding_model=None, batch_size: int = 32, kind: str | None = None,
                 dense_weight: float = DEFAULT_DENSE_WEIGHT) -> None:
        kind = kind or ("dense" if embedding_model is not None else "bm25")
        if kind in ("dense", "hybrid") and embedding_model is None:
            raise UserError(f"--first_stage {kind} needs --embedding_model (the reranker itself cannot retrieve)")
        self.corpus = corpus
        self.embedding_model = embedding_model
        self.batch_size = batch_size
        self.bm25 = BM25Index(corpus.texts)
        self.passage_embeddings = None
        if embedding_model is not None:
            self.passage_embeddings = encode_passages(embedding_model, corpus.texts, batch_size=batch_size,
                                                      show_progress_bar=len(corpus) > 1000)
        self.name = kind
        self.dense_weight = dense_weight

    def runs(self, texts: Sequence[str], k: int, kind: str | None = None) -> list[dict[str, float]]:
        """Per query text, the top-k passages with their scores ({id: score}) of this first stage (or ``kind``)."""
        kind = kind or self.name
        if not texts:
            return []
        tie = tie_ranks(self.corpus.ids)
        if kind == "bm25":
            return [run_from_arrays(self.corpus.ids, i, s) for i, s in zip(*bm25_top_k(self.bm25, list(texts), k, tie))]
        q_emb = encode_queries(self.embedding_model, texts, batch_size=self.batch_size)
        depth = k if kind == "dense" else max(k, self.HYBRID_DEPTH)
        dense = [run_from_arrays(self.corpus.ids, i, s)
                 for i, s in zip(*dense_top_k(q_emb, self.passage_embeddings, depth, tie))]
        if kind == "dense":
            return dense
        lexical = [run_from_arrays(self.corpus.ids, i, s)
                   for i, s in zip(*bm25_top_k(self.bm25, list(texts), depth, tie))]
        fused = fuse_all(dense, lexical, self.dense_weight)
        return [{pid: run[pid] for pid in ranking(run)[:k]} for run in fused]

    def choose_dense_weight(self, queries: Sequence[LabelledQuery], k: int,
                            metric: str = DEFAULT_METRIC) -> float:
        """For a hybrid, the dense weight with the best ``metric`` on these (dev, never test) queries; kept."""
        if self.name == "hybrid" and queries:
            texts = [q.query for q in queries]
            depth = max(k, self.HYBRID_DEPTH)
            self.dense_weight, _ = choose_weight(self.runs(texts, depth, "dense"), self.runs(texts, depth, "bm25"),
                                                 [q.relevant_ids for q in queries], metric)
        return self.dense_weight

    def mine(self, queries: Sequence[LabelledQuery], source: str, rank_range: tuple[int, int]) -> NegativeCandidates:
        return mine_candidates(queries, self.corpus, source, rank_range, dense_model=self.embedding_model,
                               batch_size=self.batch_size, bm25_index=self.bm25,
                               passage_embeddings=self.passage_embeddings, dense_weight=self.dense_weight)


"""Top-k with one tie rule, trec_eval's, for every ranking ragtune computes.

trec_eval orders a run by score descending, then by document id descending (``strcmp``). Every
first-stage ranking (BM25 and dense, in ``evaluate_rag.py`` and in the training scripts' dev
evaluators) goes through :class:`TopK` with the tie ranks of :func:`tie_ranks`, so a dev number is
the number ``evaluate_rag.py`` reports for the same scores, and both are trec_eval's. A reranker
reorders a first stage's candidates; its ties keep the first-stage order (:func:`rerank_order`).

Memory: scores are merged block by block (``query_batch x chunk_size`` at a time), so top-k over a
corpus of any size never holds a queries x corpus matrix.
"""

from __future__ import annotations

import sys
from typing import Any, Iterator, Sequence

import numpy as np


def tie_ranks(ids: Sequence[str]) -> np.ndarray:
    """Position of each passage in trec_eval's tie order (id descending, plain string comparison)."""
    ranks = np.empty(len(ids), dtype=np.int64)
    if not len(ids):
        return ranks
    # numpy compares unicode strings by code point, as Python (and strcmp on UTF-8) does; ids are unique.
    order = np.argsort(np.asarray(ids, dtype=str), kind="stable")[::-1]
    ranks[order] = np.arange(len(ids), dtype=np.int64)
    return ranks


class TopK:
    """Exact top-k per query under (score descending, tie rank ascending), merged block by block.

    ``update`` takes the scores of a batch of queries against a contiguous block of passages.
    Inside a block, ``argpartition`` finds the k best; when the k-th score is tied with passages
    outside those k, the tied passages are compared by tie rank, so the result never depends on
    how the corpus was cut into blocks.
    """

    def __init__(self, n_queries: int, k: int, tie_rank: np.ndarray) -> None:
        self.k = k
        self.tie_rank = tie_rank
        self.idx = [np.zeros((0,), dtype=np.int64) for _ in range(n_queries)]
        self.scores = [np.zeros((0,), dtype=np.float64) for _ in range(n_queries)]
        self._batched: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def update(self, q_start: int, doc_start: int, scores: np.ndarray) -> None:
        scores = np.asarray(scores)
        if not np.issubdtype(scores.dtype, np.floating):
            scores = scores.astype(np.float64)
        if np.isnan(scores).any():
            scores = np.nan_to_num(scores, nan=-np.inf)
        n_rows, n_docs = scores.shape
        if n_rows == 0 or n_docs == 0:
            return
        kk = min(self.k, n_docs)
        ranks = self.tie_rank[doc_start:doc_start + n_docs]
        if kk < n_docs:
            part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
            kth = np.take_along_axis(scores, part, axis=1).min(axis=1)
            ties = np.flatnonzero((scores >= kth[:, None]).sum(axis=1) > kk)
            for row in ties:  # rare: equal scores straddle the cut
                cand = np.flatnonzero(scores[row] >= kth[row])
                part[row] = cand[np.lexsort((ranks[cand], -scores[row, cand]))[:kk]]
        else:
            part = np.broadcast_to(np.arange(n_docs), (n_rows, n_docs))
        cand_scores = np.take_along_axis(scores, part, axis=1)
        cand_idx = part + doc_start
        key = q_start
        if key in self._batched and self._batched[key][0].shape[0] == n_rows:
            best_idx, best_scores = self._batched[key]
            cand_idx = np.concatenate([best_idx, cand_idx], axis=1)
            cand_scores = np.concatenate([best_scores, cand_scores], axis=1)
        order = np.lexsort((self.tie_rank[cand_idx], -cand_scores), axis=1)[:, :self.k]
        self._batched[key] = (np.take_along_axis(cand_idx, order, axis=1),
                              np.take_along_axis(cand_scores, order, axis=1))

    def result(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per query, passage indices and scores, best first."""
        for q_start, (idx, scores) in self._batched.items():
            for offset in range(idx.shape[0]):
                self.idx[q_start + offset] = idx[offset]
                self.scores[q_start + offset] = scores[offset]
        return self.idx, self.scores


def _is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")  # a tensor exists only if torch is already imported
    return torch is not None and isinstance(value, torch.Tensor)


def _passage_chunks(passages: Any, chunk_size: int) -> Iterator[tuple[int, Any]]:
    if hasattr(passages, "chunks"):  # an EmbeddingStore: read from disk chunk by chunk
        yield from passages.chunks(chunk_size)
        return
    for start in range(0, len(passages), chunk_size):
        yield start, passages[start:start + chunk_size]


def dense_top_k(query_embeddings: Any, passages: Any, k: int, tie_rank: np.ndarray, chunk_size: int = 16384,
                query_batch: int = 1024) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Top-k passages per query by dot product (cosine for normalised embeddings), in trec order.

    ``passages``: a numpy matrix, a torch tensor, or an ``EmbeddingStore``. With torch tensors the
    products are computed on the queries' device (a GPU during training) and only each block's
    scores come back to the CPU for the merge.
    """
    n_passages = passages.n if hasattr(passages, "chunks") else len(passages)
    on_torch = _is_tensor(query_embeddings) or _is_tensor(passages)
    if on_torch:
        import torch  # already imported wherever a tensor exists; this module never imports it itself

        queries = torch.as_tensor(query_embeddings).float()
    else:
        queries = np.ascontiguousarray(query_embeddings, dtype=np.float32)
    top = TopK(len(queries), min(k, n_passages), tie_rank)
    for start, chunk in _passage_chunks(passages, chunk_size):
        if on_torch:
            chunk = torch.as_tensor(chunk).to(queries.device).float()
        for q0 in range(0, len(queries), query_batch):
            scores = queries[q0:q0 + query_batch] @ chunk.T
            top.update(q0, start, scores.cpu().numpy() if on_torch else scores)
    return top.result()


def bm25_top_k(index: Any, queries: Sequence[str], k: int, tie_rank: np.ndarray, chunk_size: int = 16384,
               query_batch: int = 1024) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Top-k by BM25 (a :class:`ragtune.core.bm25.BM25Index`), corpus cut into chunks: never queries x corpus."""
    doc_terms = index.weights.T.tocsr()  # passages x terms
    top = TopK(len(queries), min(k, index.n_docs), tie_rank)
    query_matrices = [(q0, index.query_matrix(list(queries[q0:q0 + query_batch])))
                      for q0 in range(0, len(queries), query_batch)]
    for start in range(0, index.n_docs, chunk_size):
        chunk_t = doc_terms[start:start + chunk_size].T.tocsr()
        for q0, qm in query_matrices:
            top.update(q0, start, (qm @ chunk_t).toarray())
    return top.result()


def rank_by_score(doc_ids: Sequence[str], scores: Sequence[float] | np.ndarray) -> list[str]:
    """All documents ordered by score descending, ties by document id descending (trec_eval's order)."""
    top = TopK(1, len(doc_ids), tie_ranks(doc_ids))
    top.update(0, 0, np.asarray(scores, dtype=np.float64).reshape(1, -1))
    return [doc_ids[i] for i in top.result()[0][0]]


def rerank_order(scores: Sequence[float] | np.ndarray) -> list[int]:
    """Positions of a first stage's candidates ordered by reranker score; ties keep the first-stage order."""
    values = [float(s) for s in scores]
    values = [float("-inf") if v != v else v for v in values]  # NaN last, as in TopK
    return sorted(range(len(values)), key=lambda j: (-values[j], j))

"""The on-disk embedding store, and dense top-k read from it in chunks (trec_eval's tie order)."""

from __future__ import annotations

import numpy as np
from trec_reference import trec_order

from ragtune.core.ranking import dense_top_k, tie_ranks
from ragtune.retrieval.embedding_store import EmbeddingStore


def test_embedding_store_and_chunked_dense_top_k(tmp_path):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(103, 8)).astype(np.float32)
    emb[50] = emb[7]  # an exact tie
    store = EmbeddingStore.write(tmp_path / "e.npy", 103, (emb[i:i + 10] for i in range(0, 103, 10)))
    assert np.array_equal(np.load(tmp_path / "e.npy"), emb)
    assert np.array_equal(np.concatenate([b for _, b in store.chunks(17)]), emb)
    ids = [str(i) for i in range(103)]
    queries = np.concatenate([emb[[7]], rng.normal(size=(5, 8)).astype(np.float32)])
    idx, scores = dense_top_k(queries, store, 9, tie_ranks(ids), chunk_size=13, query_batch=4)
    full = queries @ emb.T
    for q in range(len(queries)):
        assert [ids[i] for i in idx[q]] == trec_order(ids, full[q])[:9]
    assert [ids[i] for i in idx[0][:2]] == ["7", "50"]  # a tie: id descending as trec_eval ("7" > "50")

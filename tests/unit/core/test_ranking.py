"""Top-k over BM25 scores computed in chunks equals the full sort, in trec_eval's tie order."""

from __future__ import annotations

from trec_reference import trec_order

from ragtune.core.bm25 import BM25Index
from ragtune.core.data import SAMPLE_CORPUS, SAMPLE_TEST, load_corpus, load_queries
from ragtune.core.ranking import bm25_top_k, tie_ranks


def test_chunked_bm25_equals_full_scores():
    corpus = load_corpus(SAMPLE_CORPUS)
    queries = [q.query for q in load_queries(SAMPLE_TEST, corpus, flag="--test_data")] + ["zzz không có"]
    index = BM25Index(corpus.texts)
    idx, _ = bm25_top_k(index, queries, 12, tie_ranks(corpus.ids), chunk_size=10, query_batch=7)
    full = index.scores(queries)
    for q in range(len(queries)):
        assert [corpus.ids[i] for i in idx[q]] == trec_order(corpus.ids, full[q])[:12]

"""The retrieval layer: finding the passages a query's answer is in.

Embeddings cached on disk and the models that make them (``embedding_store``), encoding with a
model's own query/passage prompts (``encoding``), the first stage a reranker reorders: BM25, dense
or hybrid (``first_stage``), and hard-negative mining (``negatives``).

Imports: ``ragtune.core`` and ``ragtune.retrieval`` only; never generation, train, evaluate or audit.
"""

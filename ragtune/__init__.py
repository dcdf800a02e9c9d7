"""ragtune: domain fine-tuning of RAG systems (embedding model, reranker, answer generator) and their evaluation.

The top-level scripts (``fine_tune_bge_m3.py``, ``fine_tune_reranker.py``, ``fine_tune_generator.py``,
``evaluate_rag.py``, ``predict_rag.py``) are thin entry points; the logic lives in these packages, each importing
only the ones below it (``tests/unit/test_layers.py`` checks it):

core        data loading, metrics, ranking and ties, BM25, fusion, significance, errors, redaction, files,
            model loading helpers, model cards: imports nothing else of ragtune
audit       personal information, leakage and duplicates in the data             (imports core)
retrieval   the first stage, dense encoding, the embedding store, negatives mining (imports core)
generation  the RAG prompt, chat rendering, loading and running a generator       (imports core)
pipeline    a chosen RAG system as one object (RAGPipeline), systems.json
            (imports core, retrieval, generation)
train       the shared training runner, and embedder/, reranker/, generator/     (never imports evaluate or pipeline)
evaluate    the systems evaluate_rag.py compares (through the pipeline), answers, judge, reports, publishing
"""

__version__ = "0.1.0"

"""ragtune: domain fine-tuning of RAG retrievers (embedding models and rerankers).

The top-level scripts (``fine_tune_bge_m3.py``, ``fine_tune_reranker.py``,
``evaluate_rag.py``) are thin entry points; everything they share lives here.
"""

__version__ = "0.1.0"

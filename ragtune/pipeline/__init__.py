"""The pipeline layer: a chosen RAG system as one object, between what it is made of and what measures it.

:class:`RAGPipeline` (``rag``) runs a first stage (BM25, dense or hybrid), an optional reranker and an optional
generator on new questions; :class:`SystemSpec` and systems.json (``spec``) say exactly what a system is, so that
evaluate_rag.py, which ranks every system it reports through a pipeline, and predict_rag.py, which rebuilds the
chosen one, run the same thing; the stages shared by the pipelines over one corpus are in ``stages``.

Imports: ``ragtune.core``, ``retrieval``, ``generation`` and ``pipeline`` itself. ``ragtune.evaluate`` imports
it; the training code never does.
"""

from ragtune.pipeline.rag import Answer, Passage, RAGPipeline, Ranking
from ragtune.pipeline.spec import SystemSpec
from ragtune.pipeline.stages import PipelineParts

__all__ = ["Answer", "Passage", "PipelineParts", "RAGPipeline", "Ranking", "SystemSpec"]

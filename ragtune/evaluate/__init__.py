"""The evaluation layer: what evaluate_rag.py computes, reports and publishes.

The held-out test queries (``heldout``), the systems compared and their metrics (``systems``), the
LLM judge and generated answers (``judge``, ``answers``, ``llm_stages``, ``llm_parsing``; the
client and cache are ``ragtune.generation``'s), the reports (``reports``), and choosing and publishing
models to the Hugging Face Hub (``publishing``, ``hub``). Every system is ranked by a
``ragtune.pipeline.RAGPipeline``, the object predict_rag.py runs.

Imports: ``ragtune.core``, ``retrieval``, ``generation``, ``pipeline``, ``audit`` and ``evaluate`` itself.
The training code never imports it.
"""

"""The evaluation layer: what evaluate_rag.py computes, reports and publishes.

The held-out test queries (``heldout``), the systems compared and their metrics (``systems``), the
LLM judge and generated answers (``judge``, ``answers``, ``llm_stages``, over ``llm_client``,
``llm_cache`` and ``llm_parsing``), the reports (``reports``), and choosing and publishing models to
the Hugging Face Hub (``publishing``, ``hub``).

Imports: ``ragtune.core``, ``retrieval``, ``generation``, ``audit`` and ``evaluate`` itself. The
training code never imports it.
"""

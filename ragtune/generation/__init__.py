"""The generation layer: the RAG prompt, and answering with a causal LM.

The prompt every caller builds (``prompt``), chat rendering and end-of-turn tokens (``chat``), and
loading a generator (base, LoRA adapter, GGUF) with greedy batched generation (``inference``):
shared by fine_tune_generator.py and evaluate_rag.py's local generator; the generators a RAG pipeline answers
with, local or an OpenAI-compatible endpoint (``generators``, over ``llm_client`` and the answer cache
``llm_cache``, which the evaluation's judge uses too).

Imports: ``ragtune.core`` and ``ragtune.generation`` only.
"""

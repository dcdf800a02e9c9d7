"""The core layer: what every script and every other layer of ragtune shares.

Data files and queries (``data``), ranking metrics and trec_eval's tie rule (``metrics``, ``ranking``),
BM25 and score fusion (``bm25``, ``fusion``), answer metrics (``answer_metrics``), paired significance
tests (``significance``), model folders, loading and cards (``model_specs``, ``models``, ``model_card``),
user errors, secret redaction, logging and atomic writes, and the command-line layout (``errors``,
``redaction``, ``io``, ``cli``).

Imports: nothing of ragtune outside ``ragtune.core``. Heavy packages are imported by the one module
that needs them (torch by ``models``), or inside the function that does (pandas, transformers,
huggingface_hub, rouge_score, sacrebleu).
"""

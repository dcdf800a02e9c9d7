"""The names of RAG systems, and the flags that pick systems by name (evaluate_rag.py --baseline, --answer_systems).

Names are built here once: evaluate_rag.py's systems and the pipelines built from flags (predict_rag.py) take
theirs from :func:`hybrid_name` and :func:`rerank_name`, and
:func:`expected_names` lists them from the command line alone, so that a flag naming a system that will not
exist fails before retrieval starts. The weights in some names (a weighted hybrid's dense weight, a fused
reranker's weight) are only chosen once the run has started: until then such a name holds :data:`WEIGHT` in
their place, and so does a pattern checked against it.

Patterns are shell-style (:mod:`fnmatch`, case-sensitive): ``*`` is every system, ``*reranker*`` every system
with a model named so; a plain name matches itself.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Sequence

WEIGHT = "<weight>"  # a weight not chosen yet
_WEIGHT_IN_NAME = re.compile(r"\((weighted|fused) [^)]*\)")


def hybrid_name(dense: str, fusion_label: str) -> str:
    """``dense`` fused with BM25: ``"<dense> + bm25 (rrf)"`` or ``"<dense> + bm25 (weighted 0.6)"``."""
    return f"{dense} + bm25 ({fusion_label})"


def rerank_name(first: str, reranker: str, fused_weight: float | str | None = None) -> str:
    """``first`` reranked by ``reranker``; with ``fused_weight``, the reranker's score fused with the first stage's."""
    name = f"{first} + {reranker}"
    if fused_weight is None:
        return name
    weight = fused_weight if isinstance(fused_weight, str) else f"{fused_weight:g}"
    return f"{name} (fused {weight})"


def expected_names(bm25: bool, hybrid: bool, embedding_labels: Sequence[str],
                   reranker_labels: Sequence[str]) -> list[str]:
    """Every system a run evaluates (evaluate_rag.py's ``retrieve``), weights as :data:`WEIGHT`."""
    names = ["bm25"] if bm25 else []
    names += embedding_labels
    weighted = []
    if hybrid:
        for label in embedding_labels:
            names.append(hybrid_name(label, "rrf"))
            weighted.append(hybrid_name(label, f"weighted {WEIGHT}"))
        names += weighted
    for reranker in reranker_labels:
        names += [rerank_name(label, reranker) for label in embedding_labels]
        for first in weighted:
            names += [rerank_name(first, reranker), rerank_name(first, reranker, WEIGHT)]
    return names


def could_match(pattern: str, expected: Sequence[str]) -> bool:
    """Whether ``pattern`` can match one of the :func:`expected_names`, whatever weights the run chooses."""
    unweighted = _WEIGHT_IN_NAME.sub(lambda m: f"({m[1]} {WEIGHT})", pattern)
    return any(fnmatchcase(name, pattern) or fnmatchcase(name, unweighted) for name in expected)


def matching(patterns: Sequence[str], names: Sequence[str]) -> tuple[list[str], list[str]]:
    """The ``names`` some pattern matches (in their order), and the patterns that match none."""
    chosen = [name for name in names if any(fnmatchcase(name, p) for p in patterns)]
    unmatched = [p for p in patterns if not any(fnmatchcase(name, p) for name in names)]
    return chosen, unmatched

"""The first stage: BM25, dense or a hybrid of both over one corpus, the candidates every later stage sees.

Written once and used by hard-negative mining (both encoder scripts), the dev evaluators, the generator's
distractor retrieval and ``evaluate_rag.py``, so that a hybrid is fused the same way everywhere.

A hybrid takes the top ``depth`` passages of BM25 and of the dense model (:data:`CANDIDATE_DEPTH`, or the
whole corpus when it is smaller), min-max normalises each over its own candidates and fuses them
(:mod:`ragtune.core.fusion`). Normalisation depends on how many candidates are normalised: a weight
chosen over the top 100 means something else over the top 7 (on held-out NeoRAG queries the same weight
0.8 gave MRR@5 0.68 at depth 100 and 0.59 at depth 7). So the depth belongs to the fusion: it is saved
with the weight (:meth:`HybridFusion.record`), and :meth:`HybridFusion.fuse` cuts deeper inputs to it and
refuses shallower ones, so a weight is always applied exactly as it was chosen.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from ragtune.core.bm25 import BM25Index
from ragtune.core.data import Corpus, LabelledQuery
from ragtune.core.errors import UserError
from ragtune.core.fusion import (
    DEFAULT_METRIC,
    DEFAULT_WEIGHT_RULE,
    FUSION_KEY,
    WeightChoice,
    choose_weight,
    fuse_all,
    ranking,
    run_from_arrays,
)
from ragtune.core.model_specs import saved_metrics
from ragtune.core.ranking import bm25_top_k, dense_top_k, tie_ranks
from ragtune.retrieval.encoding import encode_passages, encode_queries

FIRST_STAGES = ("bm25", "dense", "hybrid")
# Candidates each source contributes to a hybrid before fusion (the whole corpus when it is smaller).
CANDIDATE_DEPTH = 100
# Dense weight of a hybrid when none was chosen on dev queries: the even mix.
DEFAULT_DENSE_WEIGHT = 0.5

Run = dict[str, float]


@dataclass(frozen=True)
class HybridFusion:
    """How a hybrid fuses BM25 and the dense model: ``method`` ("weighted" or "rrf"), the dense weight, the depth."""

    method: str = "weighted"
    dense_weight: float | None = DEFAULT_DENSE_WEIGHT
    depth: int = CANDIDATE_DEPTH

    @property
    def label(self) -> str:
        return "rrf" if self.method == "rrf" else f"weighted {self.dense_weight:g}"

    def candidates(self, corpus_size: int) -> int:
        """How many passages each source contributes: the depth, or the whole corpus when it is smaller."""
        return min(self.depth, corpus_size)

    def fuse(self, dense: Sequence[Run], bm25: Sequence[Run], corpus_size: int) -> list[Run]:
        """Per query, the fused scores of the dense and BM25 runs' top :meth:`candidates` passages.

        Runs deeper than that are cut to it; a shallower run raises ValueError (fusing it would apply the
        weight at another depth than the one it was chosen at).
        """
        need = self.candidates(corpus_size)
        cut = []
        for runs in (dense, bm25):
            if any(len(run) < need for run in runs):
                raise ValueError(f"hybrid fusion at depth {self.depth} needs the top {need} passages of each source, "
                                 f"got {min(len(run) for run in runs)}")
            cut.append([{pid: run[pid] for pid in ranking(run)[:need]} for run in runs])
        return fuse_all(cut[0], cut[1], None if self.method == "rrf" else self.dense_weight)

    def record(self) -> dict[str, Any]:
        """What ``metrics.json`` saves (under ``fusion``) so that every later stage fuses the same way."""
        return {"first_stage": "hybrid", "fusion": self.method, "dense_weight": self.dense_weight, "depth": self.depth}

    @classmethod
    def saved(cls, model_dir: str | Path | None) -> HybridFusion | None:
        """The hybrid fusion the embedding script chose and saved in the model folder's ``metrics.json``, if any.

        A record without a depth (saved before the depth was) was chosen at depth 100, the depth used then.
        """
        record = saved_metrics(model_dir).get(FUSION_KEY) if model_dir else None
        weight = record.get("dense_weight") if isinstance(record, dict) else None
        if not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
            return None
        depth = record.get("depth", CANDIDATE_DEPTH)
        return cls("weighted", float(weight), int(depth) if isinstance(depth, int) and depth > 0 else CANDIDATE_DEPTH)


class FirstStage:
    """BM25, dense (the ``embedding_model``, a SentenceTransformer) or hybrid retrieval over one corpus.

    The corpus is indexed and encoded once; the same index and passage embeddings serve every caller.
    ``kind`` defaults to dense when an embedding model is given, else BM25; ``fusion`` is the hybrid's.
    ``expander`` (``--expansions``, :mod:`ragtune.core.expansions`) rewrites every query this first stage sees,
    so mining, dev metrics and weight choices all retrieve as the evaluated and deployed pipeline does.
    """

    def __init__(self, corpus: Corpus, embedding_model=None, kind: str | None = None,
                 fusion: HybridFusion = HybridFusion(), batch_size: int = 32,
                 expander: Callable[[str], str] | None = None) -> None:
        kind = kind or ("dense" if embedding_model is not None else "bm25")
        if kind in ("dense", "hybrid") and embedding_model is None:
            raise UserError(f"--first_stage {kind} needs --embedding_model (the reranker itself cannot retrieve)")
        self.corpus = corpus
        self.embedding_model = embedding_model
        self.name = kind
        self.fusion = fusion
        self.batch_size = batch_size
        self.expander = expander
        self.tie = tie_ranks(corpus.ids)
        self.bm25 = BM25Index(corpus.texts)
        self.passage_embeddings = None
        if embedding_model is not None:
            self.passage_embeddings = encode_passages(embedding_model, corpus.texts, batch_size=batch_size,
                                                      show_progress_bar=len(corpus) > 1000)

    def runs(self, texts: Sequence[str], k: int, kind: str | None = None) -> list[Run]:
        """Per query text, the top ``k`` passages with their scores ({id: score}) of this first stage (or ``kind``)."""
        if self.expander is not None:
            texts = [self.expander(text) for text in texts]
        return self._retrieve(texts, k, kind or self.name)

    def _retrieve(self, texts: Sequence[str], k: int, kind: str) -> list[Run]:
        if not texts:
            return []
        if kind == "hybrid":
            depth = self.fusion.candidates(len(self.corpus))
            fused = self.fusion.fuse(self._retrieve(texts, depth, "dense"), self._retrieve(texts, depth, "bm25"),
                                     len(self.corpus))
            return [{pid: run[pid] for pid in ranking(run)[:k]} for run in fused]
        if kind == "bm25":
            idx, scores = bm25_top_k(self.bm25, list(texts), k, self.tie)
        else:
            q_emb = encode_queries(self.embedding_model, texts, batch_size=self.batch_size)
            idx, scores = dense_top_k(q_emb, self.passage_embeddings, k, self.tie)
        return [run_from_arrays(self.corpus.ids, i, s) for i, s in zip(idx, scores)]

    def rankings(self, texts: Sequence[str], k: int, kind: str | None = None) -> list[list[str]]:
        """Per query text, the top ``k`` passage ids, best first."""
        return [ranking(run) for run in self.runs(texts, k, kind)]

    def choose_fusion(self, queries: Sequence[LabelledQuery], metric: str = DEFAULT_METRIC,
                      rule: str = DEFAULT_WEIGHT_RULE) -> WeightChoice:
        """Choose the hybrid's dense weight on these (dev, never test) queries, at the fusion's own depth; kept."""
        texts = [q.query for q in queries]
        depth = self.fusion.candidates(len(self.corpus))
        choice = choose_weight(self.runs(texts, depth, "dense"), self.runs(texts, depth, "bm25"),
                               [q.relevant_ids for q in queries], metric, rule=rule)
        self.fusion = replace(self.fusion, method="weighted", dense_weight=choice.weight)
        return choice

"""The systems evaluate_rag.py compares, each a ranked list per query, and their metrics.

Systems: BM25; each embedding model; hybrids of each embedding model with BM25 (reciprocal rank
fusion, and weighted fusion of normalised scores, :mod:`ragtune.core.fusion`); each embedding model and
each weighted hybrid + each reranker (its top ``top_n`` reordered), and the hybrid + reranker with
the reranker's score fused with the first stage's (``fused_rerank_system``). Every system produces
one ranked list per query, ``depth`` passages deep, and every metric at every k is read off that
list (:mod:`ragtune.core.metrics`): nothing is retrieved twice.

Ties: first stages order tied scores as trec_eval does (:mod:`ragtune.core.ranking`), so our numbers
equal trec_eval's given the same scores; a reranker's ties keep the first-stage order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ragtune.core.bm25 import BM25Index
from ragtune.core.data import Corpus, LabelledQuery
from ragtune.core.fusion import choose_weight, fuse_top_k, runs_from_top_k, saved_weight
from ragtune.core.metrics import RANKING_METRICS, context_metrics, mean_metrics, query_metrics
from ragtune.core.model_specs import ModelSpec, saved_prompts
from ragtune.core.ranking import bm25_top_k, dense_top_k, rerank_order
from ragtune.retrieval.embedding_store import (
    CACHE_VERSION,
    EmbeddingModelHandle,
    EmbeddingRun,
    cache_file,
    load_model,
    passage_store,
    query_embeddings,
    write_atomically,
)

logger = logging.getLogger(__name__)


@dataclass
class System:
    """One retrieval pipeline and its ranked lists (corpus indices, best first, ``depth`` deep)."""

    name: str
    # "bm25" | "dense" | "hybrid" | "rerank" (a dense first stage reranked: what publishing compares) |
    # "hybrid_rerank" (a hybrid first stage reranked) | "fused_rerank" (reranker score fused with the hybrid's)
    kind: str
    embedding_model: str | None = None
    reranker_model: str | None = None
    ranked: list[list[int]] = field(default_factory=list)
    scores: list[list[float]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)
    per_query: list[dict[str, float | None]] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)

    def ranked_ids(self, corpus: Corpus, qi: int, depth: int | None = None) -> list[str]:
        row = self.ranked[qi] if depth is None else self.ranked[qi][:depth]
        return [corpus.ids[i] for i in row]

    def top(self, n: int | None = None) -> tuple[list[list[int]], list[list[float]]]:
        """Per query, the first ``n`` corpus indices and their scores (all when None): what fusion takes."""
        if n is None:
            return self.ranked, self.scores
        return [row[:n] for row in self.ranked], [row[:n] for row in self.scores]


def bm25_system(corpus: Corpus, queries: Sequence[LabelledQuery], depth: int, tie_rank: np.ndarray,
                chunk_size: int) -> System:
    start = time.perf_counter()
    index = BM25Index(corpus.texts)
    idx, scores = bm25_top_k(index, [q.query for q in queries], depth, tie_rank, chunk_size)
    return System(name="bm25", kind="bm25", ranked=[r.tolist() for r in idx], scores=[s.tolist() for s in scores],
                  info={"seconds": round(time.perf_counter() - start, 3), "k1": 1.5, "b": 0.75})


def dense_system(handle: EmbeddingModelHandle, corpus: Corpus, queries: Sequence[LabelledQuery], depth: int,
                 tie_rank: np.ndarray, cache_dir: Path, chunk_size: int,
                 corpus_fingerprint: str | None = None) -> System:
    start = time.perf_counter()
    store, p_cached = passage_store(handle, corpus, cache_dir, corpus_fingerprint=corpus_fingerprint)
    q_emb, q_cached = query_embeddings(handle, [q.query for q in queries], cache_dir)
    idx, scores = dense_top_k(q_emb, store, depth, tie_rank, chunk_size=chunk_size)
    spec = handle.run.spec
    return System(name=spec.label, kind="dense", embedding_model=spec.name, ranked=[r.tolist() for r in idx],
                  scores=[s.tolist() for s in scores],
                  info={"embedding_model_hash": spec.fingerprint, "embedding_model_revision": spec.revision,
                        "query_prompt": handle.run.query_prompt, "passage_prompt": handle.run.passage_prompt,
                        "max_seq_length": handle.run.max_seq_length, "passage_embeddings_cached": p_cached,
                        "query_embeddings_cached": q_cached, "embedding_dim": store.dim,
                        "seconds": round(time.perf_counter() - start, 3)})


def embedding_handle(spec: ModelSpec, max_seq_length: int | None, batch_size: int, device: str | None,
                     query_prompt: str | None, passage_prompt: str | None) -> EmbeddingModelHandle:
    """A handle on one embedding model with its prompts: the prompts a model saved win (it was trained with
    them); ``query_prompt``/``passage_prompt`` fill in for a model that saved none."""
    handle = EmbeddingModelHandle(EmbeddingRun(spec, "", "", max_seq_length, batch_size), device)
    if spec.path is None:
        handle.model()  # a Hub model not cached yet: download it to know its prompts and hash
    saved_query, saved_passage = saved_prompts(spec.path)
    handle.run.query_prompt = saved_query or (query_prompt or "")
    handle.run.passage_prompt = saved_passage or (passage_prompt or "")
    for flag, saved, given in (("--query_prompt", saved_query, query_prompt),
                               ("--passage_prompt", saved_passage, passage_prompt)):
        if saved and given is not None and given != saved:
            logger.warning("%s: %s keeps the prompt it saved (%r), not %r", flag, spec.label, saved, given)
    return handle


class RerankScores:
    """CrossEncoder scores of (query, passage) pairs, each pair scored once per run and cached on disk."""

    def __init__(self, spec: ModelSpec, max_length: int | None, cache_dir: Path | None) -> None:
        self.spec = spec
        self.max_length = max_length
        # Raw logits, as the reranker script's dev evaluator ranks: a sigmoid would turn confident scores
        # into ties (1.0 == 1.0) that the dev numbers do not have.
        payload = {"v": CACHE_VERSION, "model": spec.fingerprint or spec.name, "max_length": max_length,
                   "scores": "logits"}
        self.path = cache_file(cache_dir, "rerank", "scores", payload, ".json") if cache_dir else None
        self.scores: dict[str, float] = {}
        if self.path is not None and self.path.exists():
            try:
                self.scores = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self.scores = {}
        self.computed = 0

    @staticmethod
    def pair_key(query: str, passage: str) -> str:
        return hashlib.sha1((query + "\x00" + passage).encode()).hexdigest()

    def score(self, pairs: Sequence[tuple[str, str]], device: str | None, batch_size: int,
              progress: bool | None = None) -> list[float]:
        keys = [self.pair_key(q, p) for q, p in pairs]
        todo = sorted({k: (q, p) for k, (q, p) in zip(keys, pairs) if k not in self.scores}.items())
        if todo:
            # Imported here: torch and sentence-transformers load in seconds, and a cached run needs neither.
            import torch
            from sentence_transformers import CrossEncoder

            logger.info("Reranking %d (query, passage) pairs with %s", len(todo), self.spec.label)
            sized = {"max_length": self.max_length} if self.max_length else {}
            model = load_model(CrossEncoder, self.spec, device, self.max_length, "--reranker_max_length", **sized)
            values = model.predict([pair for _, pair in todo], batch_size=batch_size, convert_to_numpy=True,
                                   show_progress_bar=progress, activation_fn=torch.nn.Identity())
            for (key, _), value in zip(todo, np.asarray(values, dtype=np.float64).reshape(len(todo), -1)[:, 0]):
                self.scores[key] = float(value)
            self.computed += len(todo)
            del model
            self._save()
        else:
            logger.info("Reranker %s: every pair scored in the cache", self.spec.label)
        return [self.scores[k] for k in keys]

    def _save(self) -> None:
        if self.path is not None:
            write_atomically(self.path, lambda tmp: tmp.write_text(json.dumps(self.scores)))


def rerank_systems(first_stage: Sequence[System], reranker: RerankScores, corpus: Corpus,
                   queries: Sequence[LabelledQuery], top_n: int, device: str | None, batch_size: int,
                   kind: str = "rerank") -> list[System]:
    """Each first-stage system's top ``top_n`` reordered by the reranker (ties keep first-stage order).

    Below ``top_n`` the first-stage order continues, so the list is as deep as before. Pairs shared
    by several first-stage systems are scored once.
    """
    start = time.perf_counter()
    pairs: list[tuple[str, str]] = []
    for system in first_stage:
        for qi, query in enumerate(queries):
            pairs += [(query.query, corpus.texts[pi]) for pi in system.ranked[qi][:top_n]]
    all_scores = reranker.score(pairs, device, batch_size)
    out, cursor = [], 0
    for system in first_stage:
        ranked, scores = [], []
        for qi in range(len(queries)):
            head = system.ranked[qi][:top_n]
            head_scores = all_scores[cursor:cursor + len(head)]
            cursor += len(head)
            order = rerank_order(head_scores)
            ranked.append([head[j] for j in order] + system.ranked[qi][top_n:])
            scores.append([head_scores[j] for j in order] + [float("-inf")] * len(system.ranked[qi][top_n:]))
        info = _first_stage_info(system)
        info.update({"reranker_model_hash": reranker.spec.fingerprint,
                     "reranker_model_revision": reranker.spec.revision,
                     "rerank_top_n": top_n, "seconds": round(time.perf_counter() - start, 3)})
        out.append(System(name=f"{system.name} + {reranker.spec.label}", kind=kind,
                          embedding_model=system.embedding_model, reranker_model=reranker.spec.name,
                          ranked=ranked, scores=scores, info=info))
    return out


def _first_stage_info(system: System) -> dict[str, Any]:
    return {k: v for k, v in system.info.items()
            if k.startswith("embedding_model") or k.endswith("prompt")
            or k in ("first_stage", "fusion", "dense_weight", "weight_from")}


def hybrid_systems(dense: System, bm25: System, ids: Sequence[str], depth: int, dense_weight: float,
                   weight_from: str) -> list[System]:
    """``dense`` fused with ``bm25``: reciprocal rank fusion, and weighted fusion with ``dense_weight``.

    ``dense_weight`` is the dense score's weight against BM25 (:func:`ragtune.core.fusion.weighted_fusion`'s
    first run); ``weight_from`` says where it came from ("metrics.json", "train_data" or "default"):
    never the test queries.
    """
    out = []
    for fusion, weight in (("rrf", None), ("weighted", dense_weight)):
        start = time.perf_counter()
        ranked, scores = fuse_top_k(ids, dense.top(), bm25.top(), weight, depth)
        info = _first_stage_info(dense)
        info.update({"first_stage": "hybrid", "fusion": fusion, "seconds": round(time.perf_counter() - start, 3)})
        if weight is not None:
            info.update({"dense_weight": weight, "weight_from": weight_from})
        label = "rrf" if weight is None else f"weighted {weight:g}"
        out.append(System(name=f"{dense.name} + bm25 ({label})", kind="hybrid", embedding_model=dense.embedding_model,
                          ranked=ranked, scores=scores, info=info))
    return out


def fused_rerank_system(first_stage: System, reranked: System, ids: Sequence[str], top_n: int,
                        reranker_weight: float, weight_from: str) -> System:
    """The reranker's score fused with the first stage's over the reranked top ``top_n``.

    Both are min-max normalised over the same ``top_n`` candidates, then ``reranker_weight`` x reranker
    + (1 - ``reranker_weight``) x first stage; below ``top_n`` the first-stage order continues. A
    reranker trained on a few dozen queries can be confidently wrong: the first stage's score keeps
    the evidence it had.
    """
    start = time.perf_counter()
    ranked, scores = fuse_top_k(ids, reranked.top(top_n), first_stage.top(top_n), reranker_weight, top_n)
    for qi, row in enumerate(first_stage.ranked):
        ranked[qi] = ranked[qi] + row[top_n:]
        scores[qi] = scores[qi] + [float("-inf")] * len(row[top_n:])
    info = {k: v for k, v in reranked.info.items() if k != "seconds"}
    info.update({"reranker_weight": reranker_weight, "reranker_weight_from": weight_from,
                 "seconds": round(time.perf_counter() - start, 3)})
    return System(name=f"{reranked.name} (fused {reranker_weight:g})", kind="fused_rerank",
                  embedding_model=reranked.embedding_model, reranker_model=reranked.reranker_model,
                  ranked=ranked, scores=scores, info=info)


def score_system(system: System, corpus: Corpus, queries: Sequence[LabelledQuery], ks: Sequence[int]) -> None:
    """Every ranking and ID-based context metric at every k, from the system's one ranked list per query."""
    depth = max(ks)
    system.per_query = []
    for qi, query in enumerate(queries):
        ids = system.ranked_ids(corpus, qi, depth)
        values: dict[str, float | None] = dict(query_metrics(ids, query.relevant_ids, ks, RANKING_METRICS))
        values.update(context_metrics(ids, query.relevant_ids, ks))
        system.per_query.append(values)
    system.metrics = mean_metrics(system.per_query)  # type: ignore[arg-type]


def add_per_query_metrics(system: System, values: Sequence[dict[str, float | None]]) -> None:
    """Merge per-query values (None = not scored: excluded from the mean and counted)."""
    for row, extra in zip(system.per_query, values):
        row.update(extra)
    keys = sorted({key for extra in values for key in extra})
    for key in keys:
        scored = [v[key] for v in values if v.get(key) is not None]
        system.metrics[key] = float(np.mean(scored)) if scored else None
        missing = len(values) - len(scored)
        if missing:
            system.excluded[key] = missing
        else:
            system.excluded.pop(key, None)


def selection_metric(main_metric: str) -> str:
    """The metric fusion weights are chosen on: the main metric when it is a ranking metric, else its nearest one."""
    name, _, k = main_metric.partition("@")
    if name in RANKING_METRICS:
        return main_metric
    return f"recall@{k}" if name == "context_recall" else f"ndcg@{k}"


class FusionWeights:
    """The fusion weights of the hybrid and fused-reranker systems, and where each came from.

    In order: the weight the training script chose on its dev split and saved in the model's
    ``metrics.json`` ("metrics.json"); else one chosen on the ``--train_data`` queries
    ("train_data"); else 0.5, with a warning ("default"). Never on the test queries: a weight tuned
    on them would make the test numbers optimistic.
    """

    def __init__(self, corpus: Corpus, train_queries: Sequence[LabelledQuery], reranker_specs: Sequence[ModelSpec],
                 depth: int, top_n: int, tie_rank: np.ndarray, cache_dir: Path, chunk_size: int, metric: str,
                 device: str | None, batch_size: int) -> None:
        self.corpus, self.train = corpus, list(train_queries)
        self.depth, self.top_n, self.tie_rank, self.cache_dir, self.chunk_size = (depth, top_n, tie_rank, cache_dir,
                                                                                    chunk_size)
        self.metric, self.device, self.batch_size = metric, device, batch_size
        # Train-query runs are only computed when some weight must be chosen on them.
        self.rerankers_need_train = any(self.saved(spec, "reranker_weight") is None for spec in reranker_specs)
        self._bm25_train: System | None = None
        self._train_first_stage: dict[str | None, System] = {}  # weighted hybrid on the train queries, by model

    @staticmethod
    def saved(spec: ModelSpec, key: str) -> float | None:
        return saved_weight(spec.path, key) if spec.path else None

    def _relevant(self) -> list[list[str]]:
        return [q.relevant_ids for q in self.train]

    def dense_weight(self, spec: ModelSpec, handle: EmbeddingModelHandle) -> tuple[float, str]:
        """The dense score's weight against BM25 for ``spec`` (its handle still loaded) and its source."""
        saved = self.saved(spec, "dense_weight")
        train_dense = None
        if self.train and (saved is None or self.rerankers_need_train):
            train_dense = dense_system(handle, self.corpus, self.train, self.depth, self.tie_rank, self.cache_dir,
                                       self.chunk_size, self.corpus.fingerprint())
            if self._bm25_train is None:
                self._bm25_train = bm25_system(self.corpus, self.train, self.depth, self.tie_rank, self.chunk_size)
        if saved is not None:
            weight, source = saved, "metrics.json"
            logger.info("%s + bm25: dense weight %g from the model's metrics.json", spec.label, weight)
        elif train_dense is not None:
            ids = self.corpus.ids
            weight, tried = choose_weight(runs_from_top_k(ids, *train_dense.top()),
                                          runs_from_top_k(ids, *self._bm25_train.top()), self._relevant(), self.metric)
            source = "train_data"
            logger.info("%s + bm25: dense weight %g chosen on %d --train_data queries (%s %.4f; 0.5 gives %.4f)",
                        spec.label, weight, len(self.train), self.metric, tried[weight], tried[0.5])
        else:
            weight, source = 0.5, "default"
            logger.warning("%s + bm25: no fusion weight in the model's metrics.json and no --train_data to choose "
                           "one on: the weighted hybrid uses 0.5", spec.label)
        if train_dense is not None:
            ranked, scores = fuse_top_k(self.corpus.ids, train_dense.top(), self._bm25_train.top(), weight, self.depth)
            self._train_first_stage[spec.name] = System(name=f"{spec.label} + bm25 (train)", kind="hybrid",
                                                        embedding_model=spec.name, ranked=ranked, scores=scores)
        return weight, source

    def reranker_weight(self, spec: ModelSpec, scorer: RerankScores, first_stage: System) -> tuple[float, str]:
        """The reranker score's weight against ``first_stage`` (a weighted hybrid) and its source.

        Chosen on --train_data, the train queries' candidates are reranked: reranker calls, cached.
        """
        saved = self.saved(spec, "reranker_weight")
        if saved is not None:
            logger.info("%s + %s: reranker weight %g from the reranker's metrics.json", first_stage.name, spec.label,
                        saved)
            return saved, "metrics.json"
        train_first = self._train_first_stage.get(first_stage.embedding_model)
        if train_first is None:
            logger.warning("%s + %s: no fusion weight in the reranker's metrics.json and no --train_data to choose "
                           "one on: the fused reranker uses 0.5", first_stage.name, spec.label)
            return 0.5, "default"
        (reranked,) = rerank_systems([train_first], scorer, self.corpus, self.train, self.top_n, self.device,
                                     self.batch_size)
        ids, n = self.corpus.ids, self.top_n
        weight, tried = choose_weight(runs_from_top_k(ids, *reranked.top(n)), runs_from_top_k(ids, *train_first.top(n)),
                                      self._relevant(), self.metric)
        logger.info("%s + %s: reranker weight %g chosen on %d --train_data queries (%s %.4f; 0.5 gives %.4f)",
                    first_stage.name, spec.label, weight, len(self.train), self.metric, tried[weight], tried[0.5])
        return weight, "train_data"

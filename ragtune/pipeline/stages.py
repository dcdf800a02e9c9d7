"""The stages a RAG pipeline runs over one corpus, for many queries at once, shared by the pipelines that need them.

:class:`PipelineParts` holds what several pipelines over one corpus share: the BM25 index, the embedding models
with their passage embeddings (cached on disk by :mod:`ragtune.retrieval.embedding_store`), the reranker scores
(cached per (query, passage)) and each first stage's ranked lists, kept per list of queries: evaluate_rag.py
builds a dozen systems from two models, and BM25 or a dense model runs once for all of them.

Every first stage ranks with trec_eval's tie rule (:mod:`ragtune.core.ranking`); its top ``k`` is the first
``k`` of any deeper list, so a list kept for one depth serves every smaller one. A reranker reorders a first
stage's head, ties keeping the first-stage order (:func:`ragtune.core.ranking.rerank_order`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ragtune.core.bm25 import BM25Index
from ragtune.core.data import Corpus
from ragtune.core.model_specs import ModelSpec, saved_prompts
from ragtune.core.ranking import bm25_top_k, dense_top_k, tie_ranks
from ragtune.pipeline.spec import ModelSettings
from ragtune.retrieval.embedding_store import (
    CACHE_VERSION,
    EmbeddingModelHandle,
    EmbeddingRun,
    cache_file,
    cache_key,
    load_model,
    passage_store,
    query_embeddings,
    write_atomically,
)

logger = logging.getLogger(__name__)

# Reranker pairs scored between two saves of the score cache: an interrupted run keeps what it scored.
RERANK_SAVE_EVERY = 2048


@dataclass
class StageRun:
    """One first stage's top lists for a list of queries: corpus indices best first, their scores; ``info`` on how
    they were made (seconds, what came from the cache)."""

    ranked: list[list[int]]
    scores: list[list[float]]
    depth: int
    info: dict[str, Any] = field(default_factory=dict)

    def top(self, n: int) -> tuple[list[list[int]], list[list[float]]]:
        """Per query, the first ``n`` indices and their scores."""
        return [row[:n] for row in self.ranked], [row[:n] for row in self.scores]


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
    """CrossEncoder scores of (query, passage) pairs, each pair scored once and cached on disk.

    The model is loaded at the first pair not in the cache and kept until :meth:`release`; the cache is saved
    every :data:`RERANK_SAVE_EVERY` pairs, so an interrupted run resumes where it stopped.
    """

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
        self._model = None

    @staticmethod
    def pair_key(query: str, passage: str) -> str:
        return hashlib.sha1((query + "\x00" + passage).encode()).hexdigest()

    def score(self, pairs: Sequence[tuple[str, str]], device: str | None, batch_size: int,
              progress: bool | None = None) -> list[float]:
        keys = [self.pair_key(q, p) for q, p in pairs]
        todo = sorted({k: (q, p) for k, (q, p) in zip(keys, pairs) if k not in self.scores}.items())
        if not todo:
            logger.info("Reranker %s: every pair scored in the cache", self.spec.label)
            return [self.scores[k] for k in keys]
        # Imported here: torch loads in seconds, and a cached run needs none of it.
        import torch

        logger.info("Reranking %d (query, passage) pairs with %s", len(todo), self.spec.label)
        model = self.model(device)
        for start in range(0, len(todo), RERANK_SAVE_EVERY):
            block = todo[start:start + RERANK_SAVE_EVERY]
            values = model.predict([pair for _, pair in block], batch_size=batch_size, convert_to_numpy=True,
                                   show_progress_bar=progress, activation_fn=torch.nn.Identity())
            for (key, _), value in zip(block, np.asarray(values, dtype=np.float64).reshape(len(block), -1)[:, 0]):
                self.scores[key] = float(value)
            self.computed += len(block)
            self._save()
        return [self.scores[k] for k in keys]

    def model(self, device: str | None):
        """The CrossEncoder, loaded once."""
        if self._model is None:
            from sentence_transformers import CrossEncoder

            sized = {"max_length": self.max_length} if self.max_length else {}
            self._model = load_model(CrossEncoder, self.spec, device, self.max_length, "--reranker_max_length",
                                     **sized)
        return self._model

    def release(self) -> None:
        """Free the model (the scores stay)."""
        self._model = None

    def _save(self) -> None:
        if self.path is not None:
            write_atomically(self.path, lambda tmp: tmp.write_text(json.dumps(self.scores)))


class PipelineParts:
    """What the pipelines over one corpus share: indexes, models, caches, and the first stages' lists per queries.

    ``cache_dir`` holds passage and query embeddings and reranker scores across runs; without one, a temporary
    folder serves this object's lifetime.
    """

    def __init__(self, corpus: Corpus, cache_dir: str | Path | None = None, device: str | None = None,
                 batch_size: int = 32, chunk_size: int = 16384) -> None:
        self.corpus = corpus
        self._temporary = None
        if cache_dir is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="ragtune-pipeline-")
            cache_dir = self._temporary.name
        self.cache_dir = Path(cache_dir)
        self.device, self.batch_size, self.chunk_size = device, batch_size, chunk_size
        self.tie_rank = tie_ranks(corpus.ids)
        self.fingerprint = corpus.fingerprint()
        self._bm25: BM25Index | None = None
        self.encoders: dict[tuple, EmbeddingModelHandle] = {}
        self.rerankers: dict[tuple, RerankScores] = {}
        self._runs: dict[tuple, StageRun] = {}

    def add_encoder(self, spec: ModelSpec, max_seq_length: int | None, query_prompt: str | None,
                    passage_prompt: str | None) -> ModelSettings:
        """Register an embedding model already resolved (evaluate_rag.py's); its settings, with the prompts it
        runs with (:func:`embedding_handle`), are what systems.json records."""
        handle = embedding_handle(spec, max_seq_length, self.batch_size, self.device, query_prompt, passage_prompt)
        settings = ModelSettings.of(spec, max_seq_length, handle.run.query_prompt, handle.run.passage_prompt)
        self.encoders[_encoder_key(settings)] = handle
        return settings

    def add_reranker(self, spec: ModelSpec, max_length: int | None) -> ModelSettings:
        """Register a reranker already resolved; its settings."""
        settings = ModelSettings.of(spec, max_length)
        self.rerankers[_reranker_key(settings)] = RerankScores(spec, max_length, self.cache_dir)
        return settings

    def encoder(self, settings: ModelSettings) -> EmbeddingModelHandle:
        """The handle of one embedding model run with these settings (one per model and settings; the model found
        again, :meth:`ModelSettings.resolve`)."""
        key = _encoder_key(settings)
        if key not in self.encoders:
            spec = settings.resolve("--embedding_model")
            self.encoders[key] = embedding_handle(spec, settings.max_length, self.batch_size, self.device,
                                                  settings.query_prompt, settings.passage_prompt)
        return self.encoders[key]

    def reranker(self, settings: ModelSettings) -> RerankScores:
        """The scores of one reranker (one per model and max length)."""
        key = _reranker_key(settings)
        if key not in self.rerankers:
            self.rerankers[key] = RerankScores(settings.resolve("--reranker_model"), settings.max_length,
                                               self.cache_dir)
        return self.rerankers[key]

    def bm25(self, texts: Sequence[str], depth: int) -> StageRun:
        """BM25's top ``depth`` for each text (Okapi BM25, k1 1.5, b 0.75)."""
        key = ("bm25", cache_key(list(texts)))
        return self._kept(key, depth, lambda: self._bm25_run(texts, depth))

    def dense(self, handle: EmbeddingModelHandle, texts: Sequence[str], depth: int) -> StageRun:
        """The embedding model's top ``depth`` (cosine) for each text; passage and query embeddings cached."""
        key = ("dense", id(handle), cache_key(list(texts)))
        return self._kept(key, depth, lambda: self._dense_run(handle, texts, depth))

    def _kept(self, key: tuple, depth: int, compute: Any) -> StageRun:
        """The lists kept under ``key`` when they are deep enough (or hold the whole corpus), else computed."""
        kept = self._runs.get(key)
        if kept is None or (kept.depth < depth and kept.depth < len(self.corpus)):
            kept = self._runs[key] = compute()
        return kept

    def _bm25_run(self, texts: Sequence[str], depth: int) -> StageRun:
        if self._bm25 is None:
            self._bm25 = BM25Index(self.corpus.texts)
        return bm25_run(self._bm25, texts, depth, self.tie_rank, self.chunk_size)

    def _dense_run(self, handle: EmbeddingModelHandle, texts: Sequence[str], depth: int) -> StageRun:
        return dense_run(handle, self.corpus, texts, depth, self.tie_rank, self.cache_dir, self.chunk_size,
                         self.fingerprint)

    def forget(self) -> None:
        """Drop the kept lists (the disk caches stay)."""
        self._runs.clear()


def _encoder_key(settings: ModelSettings) -> tuple:
    return settings.path or settings.name, settings.max_length, settings.query_prompt, settings.passage_prompt


def _reranker_key(settings: ModelSettings) -> tuple:
    return settings.path or settings.name, settings.max_length


def bm25_run(index: BM25Index, texts: Sequence[str], depth: int, tie_rank: np.ndarray,
             chunk_size: int = 16384) -> StageRun:
    """BM25's top ``depth`` for each text (Okapi BM25, k1 1.5, b 0.75), ties in trec_eval's order."""
    start = time.perf_counter()
    idx, scores = bm25_top_k(index, list(texts), depth, tie_rank, chunk_size)
    return StageRun([r.tolist() for r in idx], [s.tolist() for s in scores], depth,
                    {"seconds": round(time.perf_counter() - start, 3), "k1": 1.5, "b": 0.75})


def dense_run(handle: EmbeddingModelHandle, corpus: Corpus, texts: Sequence[str], depth: int, tie_rank: np.ndarray,
              cache_dir: Path, chunk_size: int = 16384, corpus_fingerprint: str | None = None) -> StageRun:
    """The embedding model's top ``depth`` (cosine) for each text; passage and query embeddings cached on disk."""
    start = time.perf_counter()
    store, p_cached = passage_store(handle, corpus, cache_dir, corpus_fingerprint=corpus_fingerprint)
    q_emb, q_cached = query_embeddings(handle, list(texts), cache_dir)
    idx, scores = dense_top_k(q_emb, store, depth, tie_rank, chunk_size=chunk_size)
    return StageRun([r.tolist() for r in idx], [s.tolist() for s in scores], depth,
                    {"passage_embeddings_cached": p_cached, "query_embeddings_cached": q_cached,
                     "embedding_dim": store.dim, "seconds": round(time.perf_counter() - start, 3)})

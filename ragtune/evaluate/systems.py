"""The systems evaluate_rag.py compares, each a ranked list per query, and their metrics.

Systems: BM25; each embedding model; hybrids of each embedding model with BM25 (reciprocal rank
fusion, and weighted fusion of normalised scores, :mod:`ragtune.core.fusion`); each embedding model and
each weighted hybrid + each reranker (its top ``top_n`` reordered), and the hybrid + reranker with
the reranker's score fused with the first stage's (``fused_rerank_system``). Every system produces
one ranked list per query, ``depth`` passages deep, and every metric at every k is read off that
list (:mod:`ragtune.core.metrics`): nothing is retrieved twice.

A hybrid fuses as the training scripts fuse (:class:`ragtune.retrieval.first_stage.HybridFusion`): the
top ``fusion.depth`` passages of BM25 and of the dense model, whatever depth the reports need, so a
weight is applied exactly as it was chosen; so does the fused reranker, over the top N it was chosen at.

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
from ragtune.core.fusion import (
    DEFAULT_WEIGHT_RULE,
    FUSION_KEY,
    WeightChoice,
    choose_weight,
    fuse_top_k,
    runs_from_top_k,
    saved_weight,
    top_of_runs,
)
from ragtune.core.metrics import RANKING_METRICS, context_metrics, mean_metrics, query_metrics
from ragtune.core.model_specs import ModelSpec, saved_metrics, saved_prompts
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
from ragtune.retrieval.first_stage import CANDIDATE_DEPTH, HybridFusion

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
            or k in ("first_stage", "fusion", "dense_weight", "weight_from", "fusion_depth")}



def fuse_systems(fusion: HybridFusion, dense: System, bm25: System, ids: Sequence[str],
                 depth: int) -> tuple[list[list[int]], list[list[float]]]:
    """``dense`` and ``bm25`` fused by ``fusion`` over their top ``fusion.depth`` (:meth:`HybridFusion.fuse`, as
    the training scripts fuse), cut to ``depth``; both must be retrieved at least ``fusion.depth`` deep."""
    need = fusion.candidates(len(ids))
    fused = fusion.fuse(runs_from_top_k(ids, *dense.top(need)), runs_from_top_k(ids, *bm25.top(need)), len(ids))
    return top_of_runs(ids, fused, depth)


@dataclass(frozen=True)
class ChosenFusion:
    """A hybrid's fusion (weight and depth) and where it came from; ``choice`` when chosen on --train_data."""

    fusion: HybridFusion
    source: str
    choice: dict[str, Any] | None = None


@dataclass(frozen=True)
class RerankerFusion:
    """A fused reranker's weight, the top N it was chosen at (and is applied at), and where it came from;
    ``against``: the first stage a saved weight was chosen against (fine_tune_reranker.py's --first_stage)."""

    weight: float
    depth: int
    source: str
    choice: dict[str, Any] | None = None
    against: str | None = None


RRF_FUSION = HybridFusion(method="rrf", dense_weight=None)


def hybrid_systems(dense: System, bm25: System, ids: Sequence[str], depth: int,
                   chosen: ChosenFusion) -> list[System]:
    """``dense`` fused with ``bm25``: reciprocal rank fusion, and weighted fusion as ``chosen``; ``depth`` deep.

    Each fuses the two systems' top ``fusion.depth`` (:data:`CANDIDATE_DEPTH` for RRF; for the weighted
    fusion the depth its weight was chosen at), whatever ``depth`` the reports need. ``chosen.source``
    says where the weight came from ("metrics.json", "train_data" or "default"): never the test queries.
    """
    out = []
    for fusion in (RRF_FUSION, chosen.fusion):
        start = time.perf_counter()
        ranked, scores = fuse_systems(fusion, dense, bm25, ids, depth)
        info = _first_stage_info(dense)
        info.update({"first_stage": "hybrid", "fusion": fusion.method, "fusion_depth": fusion.depth,
                     "fusion_candidates": fusion.candidates(len(ids)),
                     "seconds": round(time.perf_counter() - start, 3)})
        if fusion.method == "weighted":
            info.update({"dense_weight": fusion.dense_weight, "weight_from": chosen.source,
                         **({"weight_choice": chosen.choice} if chosen.choice else {})})
        out.append(System(name=f"{dense.name} + bm25 ({fusion.label})", kind="hybrid",
                          embedding_model=dense.embedding_model, ranked=ranked, scores=scores, info=info))
    return out


def fused_rerank_system(first_stage: System, reranked: System, ids: Sequence[str],
                        chosen: RerankerFusion) -> System:
    """The reranker's score fused with the first stage's over the reranked top ``chosen.depth``.

    Both are min-max normalised over the same ``chosen.depth`` candidates (the top N the weight was
    chosen at: ``reranked`` must rerank that many), then ``weight`` x reranker + (1 - ``weight``) x first
    stage; below them the first-stage order continues. A reranker trained on a few dozen queries can be
    confidently wrong: the first stage's score keeps the evidence it had.
    """
    start = time.perf_counter()
    top_n, weight = chosen.depth, chosen.weight
    ranked, scores = fuse_top_k(ids, reranked.top(top_n), first_stage.top(top_n), weight, top_n)
    for qi, row in enumerate(first_stage.ranked):
        ranked[qi] = ranked[qi] + row[top_n:]
        scores[qi] = scores[qi] + [float("-inf")] * len(row[top_n:])
    info = {k: v for k, v in reranked.info.items() if k != "seconds"}
    info.update({"reranker_weight": weight, "reranker_weight_from": chosen.source, "reranker_fusion_depth": top_n,
                 **({"reranker_weight_chosen_against": chosen.against} if chosen.against else {}),
                 **({"reranker_weight_choice": chosen.choice} if chosen.choice else {}),
                 "seconds": round(time.perf_counter() - start, 3)})
    return System(name=f"{reranked.name} (fused {weight:g})", kind="fused_rerank",
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


def saved_reranker_fusion(spec: ModelSpec, top_n: int) -> RerankerFusion | None:
    """The reranker weight fine_tune_reranker.py chose on dev and saved, at the depth saved with it (its dev top N;
    ``top_n`` for a record saved before the depth was); None when the reranker's metrics.json has none."""
    weight = saved_weight(spec.path, "reranker_weight") if spec.path else None
    if weight is None:
        return None
    record = saved_metrics(spec.path)[FUSION_KEY]
    depth, against = record.get("depth"), record.get("first_stage")
    valid = isinstance(depth, int) and not isinstance(depth, bool) and depth > 0
    return RerankerFusion(weight, depth if valid else top_n, "metrics.json",
                          against=against if isinstance(against, str) else None)


def fusion_depth(embedding_specs: Sequence[ModelSpec], reranker_specs: Sequence[ModelSpec], top_n: int) -> int:
    """How deep the first stages of the hybrids must be retrieved: every fusion's depth (the saved ones and
    :data:`CANDIDATE_DEPTH`) and every fused reranker's top N."""
    depths = [CANDIDATE_DEPTH, top_n]
    depths += [fusion.depth for fusion in map(HybridFusion.saved, (s.path for s in embedding_specs)) if fusion]
    depths += [saved.depth for saved in (saved_reranker_fusion(s, top_n) for s in reranker_specs) if saved]
    return max(depths)


class FusionWeights:
    """The fusions of the hybrid and fused-reranker systems, and where each came from.

    In order: the weight the training script chose on its dev split and saved in the model's
    ``metrics.json``, with the depth it was chosen at ("metrics.json"); else one chosen on the
    ``--train_data`` queries by ``rule`` at :data:`CANDIDATE_DEPTH` (the reranker's at ``top_n``)
    ("train_data"); else 0.5, with a warning ("default"). Never on the test queries: a weight tuned on
    them would make the test numbers optimistic. ``depth``: how deep the train-query runs are retrieved.
    """

    def __init__(self, corpus: Corpus, train_queries: Sequence[LabelledQuery], reranker_specs: Sequence[ModelSpec],
                 depth: int, top_n: int, tie_rank: np.ndarray, cache_dir: Path, chunk_size: int, metric: str,
                 device: str | None, batch_size: int, rule: str = DEFAULT_WEIGHT_RULE) -> None:
        self.corpus, self.train = corpus, list(train_queries)
        self.depth, self.top_n, self.tie_rank, self.cache_dir, self.chunk_size = (depth, top_n, tie_rank, cache_dir,
                                                                                    chunk_size)
        self.metric, self.rule, self.device, self.batch_size = metric, rule, device, batch_size
        # Train-query runs are only computed when some weight must be chosen on them.
        self.rerankers_need_train = any(saved_reranker_fusion(spec, top_n) is None for spec in reranker_specs)
        self._bm25_train: System | None = None
        self._train_first_stage: dict[str | None, System] = {}  # weighted hybrid on the train queries, by model

    def _relevant(self) -> list[list[str]]:
        return [q.relevant_ids for q in self.train]

    def dense_fusion(self, spec: ModelSpec, handle: EmbeddingModelHandle) -> ChosenFusion:
        """The weighted hybrid's fusion for ``spec`` (its handle still loaded) and where its weight came from."""
        saved = HybridFusion.saved(spec.path)
        train_dense = None
        if self.train and (saved is None or self.rerankers_need_train):
            train_dense = dense_system(handle, self.corpus, self.train, self.depth, self.tie_rank, self.cache_dir,
                                       self.chunk_size, self.corpus.fingerprint())
            if self._bm25_train is None:
                self._bm25_train = bm25_system(self.corpus, self.train, self.depth, self.tie_rank, self.chunk_size)
        if saved is not None:
            chosen = ChosenFusion(saved, "metrics.json")
            logger.info("%s + bm25: dense weight %g at depth %d from the model's metrics.json", spec.label,
                        saved.dense_weight, saved.depth)
        elif train_dense is not None:
            chosen = self._choose_dense(spec, train_dense)
        else:
            chosen = ChosenFusion(HybridFusion(), "default")
            logger.warning("%s + bm25: no fusion weight in the model's metrics.json and no --train_data to choose "
                           "one on: the weighted hybrid uses 0.5", spec.label)
        if train_dense is not None:
            ranked, scores = fuse_systems(chosen.fusion, train_dense, self._bm25_train, self.corpus.ids, self.depth)
            self._train_first_stage[spec.name] = System(name=f"{spec.label} + bm25 (train)", kind="hybrid",
                                                        embedding_model=spec.name, ranked=ranked, scores=scores)
        return chosen

    def _choose_dense(self, spec: ModelSpec, train_dense: System) -> ChosenFusion:
        """The dense weight chosen on the --train_data queries by the rule, at :data:`CANDIDATE_DEPTH`."""
        ids, need = self.corpus.ids, HybridFusion().candidates(len(self.corpus))
        choice = choose_weight(runs_from_top_k(ids, *train_dense.top(need)),
                               runs_from_top_k(ids, *self._bm25_train.top(need)), self._relevant(), self.metric,
                               rule=self.rule)
        self._log_choice(f"{spec.label} + bm25: dense weight", choice, CANDIDATE_DEPTH, "BM25")
        return ChosenFusion(HybridFusion("weighted", choice.weight, CANDIDATE_DEPTH), "train_data", choice.record())

    def _log_choice(self, what: str, choice: WeightChoice, depth: int, reference: str) -> None:
        logger.info("%s %g chosen on %d --train_data queries at depth %d by %s (%s %.4f ± %.4f; %s alone %.4f)",
                    what, choice.weight, len(self.train), depth, choice.rule, choice.metric, choice.value,
                    choice.standard_error, reference, choice.reference)

    def reranker_fusion(self, spec: ModelSpec, scorer: RerankScores, first_stage: System) -> RerankerFusion:
        """The reranker score's weight against ``first_stage`` (a weighted hybrid), its depth and its source.

        Chosen on --train_data, the train queries' top ``top_n`` are reranked (reranker calls, cached) and the
        weight is chosen by the rule at that depth.
        """
        saved = saved_reranker_fusion(spec, self.top_n)
        if saved is not None:
            logger.info("%s + %s: reranker weight %g at depth %d from the reranker's metrics.json", first_stage.name,
                        spec.label, saved.weight, saved.depth)
            return saved
        train_first = self._train_first_stage.get(first_stage.embedding_model)
        if train_first is None:
            logger.warning("%s + %s: no fusion weight in the reranker's metrics.json and no --train_data to choose "
                           "one on: the fused reranker uses 0.5", first_stage.name, spec.label)
            return RerankerFusion(0.5, self.top_n, "default")
        (reranked,) = rerank_systems([train_first], scorer, self.corpus, self.train, self.top_n, self.device,
                                     self.batch_size)
        ids, n = self.corpus.ids, self.top_n
        choice = choose_weight(runs_from_top_k(ids, *reranked.top(n)), runs_from_top_k(ids, *train_first.top(n)),
                               self._relevant(), self.metric, rule=self.rule)
        self._log_choice(f"{first_stage.name} + {spec.label}: reranker weight", choice, n, "the first stage")
        return RerankerFusion(choice.weight, n, "train_data", choice.record())

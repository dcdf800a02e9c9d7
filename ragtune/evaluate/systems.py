"""The systems evaluate_rag.py compares, each a RAG pipeline's ranked list per query, and their metrics.

Systems: BM25; each embedding model; hybrids of each embedding model with BM25 (reciprocal rank
fusion, and weighted fusion of normalised scores, :mod:`ragtune.core.fusion`); each embedding model and
each weighted hybrid + each reranker (its top ``top_n`` reordered), and the hybrid + reranker with
the reranker's score fused with the first stage's. Each system is a :class:`ragtune.pipeline.SystemSpec`
ranked by a :class:`ragtune.pipeline.RAGPipeline`, the object predict_rag.py rebuilds from systems.json: what
is measured here is what runs there. The pipelines share one :class:`ragtune.pipeline.PipelineParts`, so BM25
and each dense model run once for every system built on them. Every system produces one ranked list per
query, ``depth`` passages deep, and every metric at every k is read off that list (:mod:`ragtune.core.metrics`).

A hybrid fuses as the training scripts fuse (:class:`ragtune.retrieval.first_stage.HybridFusion`): the
top ``fusion.depth`` passages of BM25 and of the dense model, whatever depth the reports need, so a
weight is applied exactly as it was chosen; so does the fused reranker, over the top N it was chosen at.

Ties: first stages order tied scores as trec_eval does (:mod:`ragtune.core.ranking`), so our numbers
equal trec_eval's given the same scores; a reranker's ties keep the first-stage order.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ragtune.core.bm25 import BM25Index
from ragtune.core.data import Corpus, LabelledQuery
from ragtune.core.expansions import QueryExpander
from ragtune.core.fusion import DEFAULT_WEIGHT_RULE, WeightChoice, choose_weight, runs_from_top_k
from ragtune.core.metrics import RANKING_METRICS, context_metrics, mean_metrics, query_metrics
from ragtune.core.model_specs import ModelSpec
from ragtune.pipeline.names import hybrid_name, rerank_name
from ragtune.pipeline.rag import RAGPipeline, Ranking, rerank
from ragtune.pipeline.spec import ModelSettings, RerankerFusion, SystemSpec, saved_reranker_fusion
from ragtune.pipeline.stages import PipelineParts, RerankScores, bm25_run, dense_run, embedding_handle
from ragtune.retrieval.embedding_store import EmbeddingModelHandle
from ragtune.retrieval.first_stage import CANDIDATE_DEPTH, HybridFusion

__all__ = [
    "ChosenFusion", "FusionWeights", "RRF_FUSION", "RerankScores", "RerankerFusion", "System", "add_per_query_metrics",
    "bm25_system", "dense_system", "embedding_handle", "fusion_depth", "pipeline_system", "rerank_systems",
    "saved_reranker_fusion", "score_system", "selection_metric",
]

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
    spec: SystemSpec | None = None  # what rebuilds it (systems.json)

    def ranked_ids(self, corpus: Corpus, qi: int, depth: int | None = None) -> list[str]:
        row = self.ranked[qi] if depth is None else self.ranked[qi][:depth]
        return [corpus.ids[i] for i in row]

    def top(self, n: int | None = None) -> tuple[list[list[int]], list[list[float]]]:
        """Per query, the first ``n`` corpus indices and their scores (all when None): what fusion takes."""
        if n is None:
            return self.ranked, self.scores
        return [row[:n] for row in self.ranked], [row[:n] for row in self.scores]


# ---------------------------------------------------------------------------- systems as specs, ranked by pipelines


RRF_FUSION = HybridFusion(method="rrf", dense_weight=None)


def bm25_spec(expander: QueryExpander | None = None) -> SystemSpec:
    return SystemSpec("bm25", "bm25").with_expansions(expander)


def dense_spec(model: ModelSettings, expander: QueryExpander | None) -> SystemSpec:
    return SystemSpec(model.label, "dense", model).with_expansions(expander)


def hybrid_specs(dense: SystemSpec, chosen: ChosenFusion) -> list[SystemSpec]:
    """``dense`` fused with BM25: reciprocal rank fusion, and weighted fusion as ``chosen`` (its weight's source
    noted: "metrics.json", "train_data" or "default", never the test queries)."""
    notes = {"weight_from": chosen.source, **({"weight_choice": chosen.choice} if chosen.choice else {})}
    return [SystemSpec(hybrid_name(dense.name, fusion.label), "hybrid", dense.embedding, fusion,
                       expansions=dense.expansions, expansions_source=dense.expansions_source,
                       notes=notes if fusion.method == "weighted" else {})
            for fusion in (RRF_FUSION, chosen.fusion)]


def rerank_spec(first: SystemSpec, reranker: ModelSettings, top_n: int, expander: QueryExpander | None,
                fused: RerankerFusion | None = None) -> SystemSpec:
    """``first`` reranked over its top ``top_n`` (``fused``: fused with it, over the top N its weight was chosen
    at)."""
    name = rerank_name(first.name, reranker.label, fused.weight if fused is not None else None)
    notes = dict(first.notes)
    notes.pop("weight_choice", None)
    if fused is not None:
        top_n = fused.depth
        notes.update({"reranker_weight_from": fused.source,
                      **({"reranker_weight_chosen_against": fused.against} if fused.against else {}),
                      **({"reranker_weight_choice": fused.choice} if fused.choice else {})})
    spec = SystemSpec(name, first.first_stage, first.embedding, first.fusion, reranker, top_n,
                      fused.weight if fused else None, notes=notes)
    return spec.with_expansions(expander)


def pipeline_system(pipeline: RAGPipeline, queries: Sequence[LabelledQuery], depth: int) -> System:
    """The system ``pipeline`` runs, ranked ``depth`` deep for every query."""
    start = time.perf_counter()
    ranking = pipeline.rank([q.query for q in queries], depth)
    spec = pipeline.spec
    return System(name=spec.name, kind=spec.kind, embedding_model=spec.embedding.name if spec.embedding else None,
                  reranker_model=spec.reranker.name if spec.reranker else None, ranked=ranking.ranked,
                  scores=ranking.scores, info=system_info(spec, ranking, time.perf_counter() - start), spec=spec)


def system_info(spec: SystemSpec, ranking: Ranking, seconds: float) -> dict[str, Any]:
    """results.json's ``info`` of a system: its models' hashes and prompts, its fusions and where their weights
    came from, what came from the cache, and how long it took."""
    info: dict[str, Any] = {}
    model = spec.embedding
    if model is not None:
        info.update({"embedding_model_hash": model.fingerprint, "embedding_model_revision": model.revision,
                     "query_prompt": model.query_prompt, "passage_prompt": model.passage_prompt})
    if spec.kind == "bm25":
        info.update({"k1": 1.5, "b": 0.75})
    elif spec.kind == "dense":
        info.update({"max_seq_length": model.max_length,
                     **{key: ranking.info.get(key) for key in ("passage_embeddings_cached", "query_embeddings_cached",
                                                               "embedding_dim")}})
    if spec.first_stage == "hybrid":
        info.update({"first_stage": "hybrid", "fusion": spec.fusion.method, "fusion_depth": spec.fusion.depth})
        if spec.fusion.method == "weighted":
            info["dense_weight"] = spec.fusion.dense_weight
        if spec.reranker is None:
            info["fusion_candidates"] = ranking.info.get("fusion_candidates")
    if spec.reranker is not None:
        info.update({"reranker_model_hash": spec.reranker.fingerprint,
                     "reranker_model_revision": spec.reranker.revision, "rerank_top_n": spec.rerank_top_n})
    if spec.reranker_weight is not None:
        info.update({"reranker_weight": spec.reranker_weight, "reranker_fusion_depth": spec.rerank_top_n})
    info.update(spec.notes)
    info["seconds"] = round(seconds, 3)
    return info


# ---------------------------------------------------------------------------- single stages (dev evaluators' tests)


def bm25_system(corpus: Corpus, queries: Sequence[LabelledQuery], depth: int, tie_rank: np.ndarray,
                chunk_size: int) -> System:
    """BM25 alone, as the pipeline's first stage ranks it."""
    run = bm25_run(BM25Index(corpus.texts), [q.query for q in queries], depth, tie_rank, chunk_size)
    return System(name="bm25", kind="bm25", ranked=run.ranked, scores=run.scores, info=run.info)


def dense_system(handle: EmbeddingModelHandle, corpus: Corpus, queries: Sequence[LabelledQuery], depth: int,
                 tie_rank: np.ndarray, cache_dir, chunk_size: int, corpus_fingerprint: str | None = None) -> System:
    """One embedding model alone, as the pipeline's first stage ranks it."""
    run = dense_run(handle, corpus, [q.query for q in queries], depth, tie_rank, cache_dir, chunk_size,
                    corpus_fingerprint)
    spec = handle.run.spec
    return System(name=spec.label, kind="dense", embedding_model=spec.name, ranked=run.ranked, scores=run.scores,
                  info=run.info)


def rerank_systems(first_stage: Sequence[System], reranker: RerankScores, corpus: Corpus,
                   queries: Sequence[LabelledQuery], top_n: int, device: str | None, batch_size: int,
                   kind: str = "rerank") -> list[System]:
    """Each first-stage system's top ``top_n`` reordered by the reranker, as the pipeline reranks."""
    texts = [q.query for q in queries]
    out = []
    for system in first_stage:
        ranking = rerank(Ranking(system.ranked, system.scores, {}), texts, corpus, reranker, top_n, device,
                         batch_size)
        out.append(System(name=rerank_name(system.name, reranker.spec.label), kind=kind,
                          embedding_model=system.embedding_model, reranker_model=reranker.spec.name,
                          ranked=ranking.ranked, scores=ranking.scores, info={"rerank_top_n": top_n}))
    return out


# ---------------------------------------------------------------------------- metrics


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


# ---------------------------------------------------------------------------- fusion weights


@dataclass(frozen=True)
class ChosenFusion:
    """A hybrid's fusion (weight and depth) and where it came from; ``choice`` when chosen on --train_data."""

    fusion: HybridFusion
    source: str
    choice: dict[str, Any] | None = None


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
    them would make the test numbers optimistic. The train queries are ranked by the same pipelines (their
    query expansion included), ``depth`` deep.
    """

    def __init__(self, parts: PipelineParts, train_queries: Sequence[LabelledQuery], depth: int, top_n: int,
                 metric: str, rule: str = DEFAULT_WEIGHT_RULE) -> None:
        self.parts, self.train = parts, [q.query for q in train_queries]
        self.relevant = [q.relevant_ids for q in train_queries]
        self.depth, self.top_n, self.metric, self.rule = depth, top_n, metric, rule

    def _rank(self, spec: SystemSpec) -> Ranking:
        return RAGPipeline(spec, self.parts).rank(self.train, self.depth)

    def dense_fusion(self, dense: SystemSpec) -> ChosenFusion:
        """The weighted hybrid's fusion for the ``dense`` system's model, and where its weight came from."""
        model = dense.embedding
        saved = HybridFusion.saved(model.path)
        if saved is not None:
            logger.info("%s + bm25: dense weight %g at depth %d from the model's metrics.json", model.label,
                        saved.dense_weight, saved.depth)
            return ChosenFusion(saved, "metrics.json")
        if not self.train:
            logger.warning("%s + bm25: no fusion weight in the model's metrics.json and no --train_data to choose "
                           "one on: the weighted hybrid uses 0.5", model.label)
            return ChosenFusion(HybridFusion(), "default")
        ids, need = self.parts.corpus.ids, HybridFusion().candidates(len(self.parts.corpus))
        train_dense = self._rank(dense)
        train_bm25 = self._rank(bm25_spec(dense.expander()))
        choice = choose_weight(runs_from_top_k(ids, *train_dense.top(need)),
                               runs_from_top_k(ids, *train_bm25.top(need)), self.relevant, self.metric,
                               rule=self.rule)
        self._log_choice(f"{model.label} + bm25: dense weight", choice, CANDIDATE_DEPTH, "BM25")
        return ChosenFusion(HybridFusion("weighted", choice.weight, CANDIDATE_DEPTH), "train_data", choice.record())

    def _log_choice(self, what: str, choice: WeightChoice, depth: int, reference: str) -> None:
        logger.info("%s %g chosen on %d --train_data queries at depth %d by %s (%s %.4f ± %.4f; %s alone %.4f)",
                    what, choice.weight, len(self.train), depth, choice.rule, choice.metric, choice.value,
                    choice.standard_error, reference, choice.reference)

    def reranker_fusion(self, reranker: ModelSettings, first: SystemSpec,
                        expander: QueryExpander | None) -> RerankerFusion:
        """The reranker score's weight against ``first`` (a weighted hybrid), its depth and its source.

        Chosen on --train_data, the train queries' top ``top_n`` are reranked (reranker calls, cached) and the
        weight is chosen by the rule at that depth.
        """
        saved = saved_reranker_fusion(reranker, self.top_n)
        if saved is not None:
            logger.info("%s + %s: reranker weight %g at depth %d from the reranker's metrics.json", first.name,
                        reranker.label, saved.weight, saved.depth)
            return saved
        if not self.train:
            logger.warning("%s + %s: no fusion weight in the reranker's metrics.json and no --train_data to choose "
                           "one on: the fused reranker uses 0.5", first.name, reranker.label)
            return RerankerFusion(0.5, self.top_n, "default")
        n, ids = self.top_n, self.parts.corpus.ids
        train_first = self._rank(first.with_expansions(expander))
        reranked = self._rank(rerank_spec(first, reranker, n, expander))
        choice = choose_weight(runs_from_top_k(ids, *reranked.top(n)), runs_from_top_k(ids, *train_first.top(n)),
                               self.relevant, self.metric, rule=self.rule)
        self._log_choice(f"{first.name} + {reranker.label}: reranker weight", choice, n, "the first stage")
        return RerankerFusion(choice.weight, n, "train_data", choice.record())

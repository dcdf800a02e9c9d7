"""The RAG pipeline: one object that runs a chosen system on new questions.

A first stage (BM25, dense, or a hybrid with the weight and depth the training script saved), an optional
reranker over the first stage's top N (fused with it with its saved weight, or alone), and an optional
generator prompted exactly as in training. evaluate_rag.py ranks every system it reports through
:meth:`RAGPipeline.rank`, and predict_rag.py rebuilds the chosen one from the evaluation's systems.json
(:meth:`RAGPipeline.from_evaluation`), so the lists predicted are the lists measured.

    from ragtune.pipeline import RAGPipeline

    rag = RAGPipeline.from_evaluation("outputs/eval", system="best")
    for passage in rag.retrieve("CLB có mấy ban?", k=5):
        print(passage.id, passage.score, passage.stage_scores)
    print(rag.answer("CLB có mấy ban?").answer)   # with a generator

Scores: ``score`` is the system's final score (below a reranked head: -inf, the first-stage order continues);
``stage_scores`` each stage's score of the passage (``bm25``, ``dense``, ``hybrid``, ``reranker``, ``fused``),
None where the passage was not among that stage's candidates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ragtune.core.data import Corpus, load_corpus
from ragtune.core.errors import UserError
from ragtune.core.expansions import QueryExpander, load_expansions
from ragtune.core.fusion import fuse_top_k, runs_from_top_k, top_of_runs
from ragtune.core.model_specs import assign_labels, resolve_model
from ragtune.core.ranking import rerank_order
from ragtune.generation.generators import EndpointOptions, GeneratorSettings, answer_messages, build_generator
from ragtune.generation.llm_cache import LLMCache
from ragtune.pipeline.names import hybrid_name, rerank_name
from ragtune.pipeline.spec import ModelSettings, SystemSpec, choose_expansions, read_evaluation, saved_reranker_fusion
from ragtune.pipeline.stages import PipelineParts, RerankScores, StageRun, embedding_handle
from ragtune.retrieval.first_stage import HybridFusion

logger = logging.getLogger(__name__)

LLM_CACHE_FILE = "llm_cache.jsonl"


@dataclass
class Ranking:
    """Per query: corpus indices best first, their final scores, and each stage's score of them."""

    ranked: list[list[int]]
    scores: list[list[float]]
    stages: dict[str, list[list[float | None]]]
    info: dict[str, Any] = field(default_factory=dict)

    def top(self, n: int) -> tuple[list[list[int]], list[list[float]]]:
        return [row[:n] for row in self.ranked], [row[:n] for row in self.scores]

    def cut(self, depth: int) -> Ranking:
        return Ranking([r[:depth] for r in self.ranked], [s[:depth] for s in self.scores],
                       {name: [row[:depth] for row in rows] for name, rows in self.stages.items()}, self.info)


@dataclass
class Passage:
    """One retrieved passage: its rank (1 = best), id, text, final score and each stage's score."""

    rank: int
    id: str
    text: str
    score: float
    stage_scores: dict[str, float | None]


@dataclass
class Answer:
    """A generated answer and the passages it was given as contexts (in prompt order)."""

    query: str
    answer: str
    contexts: list[Passage]


class RAGPipeline:
    """A RAG system over one corpus: ``spec`` says what it is, ``parts`` holds the models, indexes and caches."""

    def __init__(self, spec: SystemSpec, parts: PipelineParts, generator: Any = None) -> None:
        self.spec = spec
        self.parts = parts
        self.generator = generator
        self.expander = spec.expander()
        self.handle = parts.encoder(spec.embedding) if spec.embedding is not None else None
        self.scorer = parts.reranker(spec.reranker) if spec.reranker is not None else None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def corpus(self) -> Corpus:
        return self.parts.corpus

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_models(cls, corpus: str | Path | Corpus, embedding_model: str | None = None,
                    reranker_model: str | None = None, first_stage: str | None = None, *,
                    dense_weight: float | None = None, rerank_top_n: int = 20, fuse_reranker: bool = True,
                    expansions: str | Path | QueryExpander | None = None, generator: GeneratorSettings | None = None,
                    endpoint: EndpointOptions = EndpointOptions(), cache_dir: str | Path | None = None,
                    device: str | None = None, batch_size: int = 32, max_seq_length: int | None = None,
                    reranker_max_length: int | None = None) -> RAGPipeline:
        """A pipeline from model folders or Hub ids, with the fusions their training saved (see :func:`build_spec`).

        ``expansions``: a CSV map (or expander) for the first stage's queries; by default the map saved with the
        models, if any.
        """
        corpus = corpus if isinstance(corpus, Corpus) else load_corpus(corpus)
        explicit = load_expansions(expansions) if isinstance(expansions, (str, Path)) else expansions
        spec = build_spec(embedding_model, reranker_model, first_stage, dense_weight, rerank_top_n, fuse_reranker,
                          explicit, max_seq_length, reranker_max_length)
        parts = PipelineParts(corpus, cache_dir, device, batch_size)
        return cls(spec, parts, cls.make_generator(generator, parts, endpoint))

    @classmethod
    def from_evaluation(cls, folder: str | Path, system: str = "best", *, corpus: str | Path | Corpus | None = None,
                        generator: GeneratorSettings | None | bool = True,
                        endpoint: EndpointOptions = EndpointOptions(),
                        expansions: str | Path | QueryExpander | None = None, cache_dir: str | Path | None = None,
                        device: str | None = None, batch_size: int | None = None) -> RAGPipeline:
        """The system ``system`` (``best``: the best by the evaluation's main metric) of an evaluate_rag.py
        output folder, exactly as it was evaluated.

        ``corpus``: default, the evaluated corpus file. ``generator``: True, the evaluation's generator (if
        any); False, none; settings, that one. ``expansions`` replaces the map the system was evaluated with.
        """
        evaluation = read_evaluation(folder)
        spec = evaluation.system(system)
        if expansions is not None:
            explicit = load_expansions(expansions) if isinstance(expansions, (str, Path)) else expansions
            if explicit.fingerprint() != (spec.expander().fingerprint() if spec.expander() else None):
                logger.warning("--expansions %s replaces the query expansion map %s was evaluated with: its "
                               "retrieval is no longer the one measured", explicit.source, spec.name)
            spec = spec.with_expansions(explicit)
        corpus = evaluated_corpus(evaluation.corpus, corpus)
        settings = evaluation.settings
        parts = PipelineParts(corpus, cache_dir, device, batch_size or settings.get("batch_size", 32),
                              settings.get("chunk_size", 16384))
        if generator is True:
            generator = GeneratorSettings.from_record(evaluation.generator) if evaluation.generator else None
        return cls(spec, parts, cls.make_generator(generator or None, parts, endpoint))

    @staticmethod
    def make_generator(settings: GeneratorSettings | None, parts: PipelineParts, endpoint: EndpointOptions) -> Any:
        """The generator ``settings`` describe, caching its answers in the parts' cache folder; None for none."""
        if settings is None:
            return None
        return build_generator(settings, LLMCache(parts.cache_dir / LLM_CACHE_FILE), parts.device, endpoint)

    # ------------------------------------------------------------------ retrieval

    def first_stage_queries(self, queries: Sequence[str]) -> list[str]:
        """The queries as the first stage sees them: expanded when the system has an expansion map."""
        return self.expander.expand_all(queries) if self.expander else list(queries)

    def rank(self, queries: Sequence[str], depth: int) -> Ranking:
        """Every query's ranked list, ``depth`` deep (corpus indices): what evaluate_rag.py scores.

        The first stage runs on the expanded queries; the reranker sees them as asked.
        """
        texts = self.first_stage_queries(queries)
        if self.scorer is None:
            return self._first_stage(texts, depth)
        top_n = self.spec.rerank_top_n
        first = self._first_stage(texts, max(depth, top_n))
        reranked = self._rerank(queries, first, top_n)
        if self.spec.reranker_weight is None:
            return reranked.cut(depth)
        return self._fuse(first, reranked, top_n).cut(depth)

    def retrieve(self, query: str, k: int = 5) -> list[Passage]:
        """The top ``k`` passages for one query."""
        return self.retrieve_batch([query], k)[0]

    def retrieve_batch(self, queries: Sequence[str], k: int = 5) -> list[list[Passage]]:
        """The top ``k`` passages for each query: the queries embedded together, reranker pairs scored together."""
        ranking = self.rank(queries, k)
        return [self.passages(ranking, qi, k) for qi in range(len(queries))]

    def passages(self, ranking: Ranking, qi: int, k: int) -> list[Passage]:
        """Query ``qi``'s top ``k`` of ``ranking`` as :class:`Passage` records."""
        corpus = self.corpus
        return [Passage(rank + 1, corpus.ids[pi], corpus.texts[pi], ranking.scores[qi][rank],
                        {name: rows[qi][rank] for name, rows in ranking.stages.items()})
                for rank, pi in enumerate(ranking.ranked[qi][:k])]

    # ------------------------------------------------------------------ generation

    def answer(self, query: str, k: int = 5) -> Answer:
        """The answer to one query from its top ``k`` passages."""
        return self.answer_batch([query], k)[0]

    def answer_batch(self, queries: Sequence[str], k: int = 5,
                     retrieved: Sequence[Sequence[Passage]] | None = None) -> list[Answer]:
        """Answers from each query's top ``k`` passages (``retrieved``: passages already retrieved), prompted as the
        generator was trained (its adapter's system prompt, the contexts in rank order, the question as asked)."""
        if self.generator is None:
            raise UserError("this pipeline has no generator: give one (--generator_local or --generator_base_url)")
        retrieved = retrieved if retrieved is not None else self.retrieve_batch(queries, k)
        system_prompt = getattr(self.generator, "system_prompt", None)
        prompts = [answer_messages(query, [p.text for p in passages[:k]], system_prompt)
                   for query, passages in zip(queries, retrieved)]
        texts = self.generator.generate(prompts)
        return [Answer(query, text, list(passages[:k])) for query, text, passages in zip(queries, texts, retrieved)]

    def check_generator(self, query: str) -> None:
        """Fail now, not mid-run, when the generator cannot answer: an endpoint that is down, a model that
        cannot be loaded (a UserError, one line)."""
        if self.generator is not None:
            self.generator.check(query)

    def release(self) -> None:
        """Free the models (caches and kept lists stay)."""
        if self.handle is not None:
            self.handle.release()
        if self.scorer is not None:
            self.scorer.release()

    # ------------------------------------------------------------------ stages

    def _first_stage(self, texts: Sequence[str], depth: int) -> Ranking:
        spec, parts = self.spec, self.parts
        if spec.first_stage == "bm25":
            return _as_ranking(parts.bm25(texts, depth), "bm25")
        if spec.first_stage == "dense":
            return _as_ranking(parts.dense(self.handle, texts, depth), "dense")
        fusion = spec.fusion
        need = fusion.candidates(len(self.corpus))
        dense, bm25 = parts.dense(self.handle, texts, max(depth, need)), parts.bm25(texts, max(depth, need))
        ids = self.corpus.ids
        dense_runs, bm25_runs = runs_from_top_k(ids, *dense.top(need)), runs_from_top_k(ids, *bm25.top(need))
        ranked, scores = top_of_runs(ids, fusion.fuse(dense_runs, bm25_runs, len(ids)), depth)
        stages = {"dense": _lookup(ranked, dense_runs, ids), "bm25": _lookup(ranked, bm25_runs, ids),
                  "hybrid": [list(row) for row in scores]}
        info = {**dense.info, "fusion_candidates": need}
        return Ranking(ranked, scores, stages, info)

    def _rerank(self, queries: Sequence[str], first: Ranking, top_n: int) -> Ranking:
        return rerank(first, queries, self.corpus, self.scorer, top_n, self.parts.device, self.parts.batch_size)

    def _fuse(self, first: Ranking, reranked: Ranking, top_n: int) -> Ranking:
        return fuse_reranked(first, reranked, self.corpus.ids, self.spec.reranker_weight, top_n)


def rerank(first: Ranking, queries: Sequence[str], corpus: Corpus, scorer: RerankScores, top_n: int,
           device: str | None, batch_size: int) -> Ranking:
    """``first``'s top ``top_n`` reordered by the reranker (ties keep the first-stage order); below them the
    first-stage order continues, with score -inf. All queries' pairs are scored in one call."""
    pairs = [(query, corpus.texts[pi]) for qi, query in enumerate(queries) for pi in first.ranked[qi][:top_n]]
    values = scorer.score(pairs, device, batch_size)
    ranked, scores, stages, cursor = [], [], {name: [] for name in (*first.stages, "reranker")}, 0
    for qi in range(len(queries)):
        row = first.ranked[qi]
        head = values[cursor:cursor + len(row[:top_n])]
        cursor += len(head)
        order = rerank_order(head) + list(range(len(head), len(row)))
        ranked.append([row[j] for j in order])
        scores.append([head[j] if j < len(head) else float("-inf") for j in order])
        for name in first.stages:
            stages[name].append([first.stages[name][qi][j] for j in order])
        stages["reranker"].append([head[j] if j < len(head) else None for j in order])
    return Ranking(ranked, scores, stages, {**first.info})


def fuse_reranked(first: Ranking, reranked: Ranking, ids: Sequence[str], weight: float, top_n: int) -> Ranking:
    """The reranker's score fused with the first stage's over the reranked top ``top_n``: both min-max normalised
    over those candidates, ``weight`` x reranker + (1 - ``weight``) x first stage; below them the first-stage
    order continues. A reranker trained on a few dozen queries can be confidently wrong: the first stage's score
    keeps the evidence it had."""
    ranked, scores = fuse_top_k(ids, reranked.top(top_n), first.top(top_n), weight, top_n)
    stages: dict[str, list[list[float | None]]] = {name: [] for name in (*reranked.stages, "fused")}
    for qi, row in enumerate(first.ranked):
        fused = list(scores[qi])
        ranked[qi] = ranked[qi] + row[top_n:]
        scores[qi] = fused + [float("-inf")] * len(row[top_n:])
        position = {pi: j for j, pi in enumerate(reranked.ranked[qi])}
        for name in reranked.stages:
            stages[name].append([reranked.stages[name][qi][position[pi]] for pi in ranked[qi]])
        stages["fused"].append(fused + [None] * len(row[top_n:]))
    return Ranking(ranked, scores, stages, {**first.info})


def _as_ranking(run: StageRun, name: str) -> Ranking:
    return Ranking(run.ranked, run.scores, {name: run.scores}, dict(run.info))


def _lookup(ranked: Sequence[Sequence[int]], runs: Sequence[dict[str, float]],
            ids: Sequence[str]) -> list[list[float | None]]:
    """Each ranked passage's score in ``runs`` (None where the run did not return it)."""
    return [[run.get(ids[pi]) for pi in row] for row, run in zip(ranked, runs)]


def evaluated_corpus(record: dict[str, Any], given: str | Path | Corpus | None) -> Corpus:
    """The corpus a system runs on: ``given``, else the evaluated corpus file; a warning when its content is not
    the evaluated content (passages added or changed: retrieval differs from the evaluation's)."""
    if isinstance(given, Corpus):
        corpus = given
    else:
        path = given or record.get("path")
        if not path:
            raise UserError("--corpus: the evaluation does not say which corpus it used; give --corpus")
        if given is None and not Path(path).is_file():
            raise UserError(f"--corpus: the evaluated corpus {path} is gone; give --corpus")
        corpus = load_corpus(path)
    expected = record.get("fingerprint")
    if expected and corpus.fingerprint() != expected:
        logger.warning("corpus %s differs from the one evaluated (%s passages, hash %s; now %d, %s): predictions "
                       "are not those measured", corpus.source, record.get("passages"), expected, len(corpus),
                       corpus.fingerprint())
    return corpus


def build_spec(embedding_model: str | None, reranker_model: str | None, first_stage: str | None,
               dense_weight: float | None, rerank_top_n: int, fuse_reranker: bool,
               explicit: QueryExpander | None, max_seq_length: int | None = None,
               reranker_max_length: int | None = None) -> SystemSpec:
    """A system from model names, as its training scripts saved it.

    First stage: ``first_stage``, else a hybrid when the embedding model saved a fusion, dense when it saved
    none, BM25 without an embedding model. A hybrid's weight and depth: ``dense_weight`` at depth 100, else
    the saved ones, else 0.5 (with a warning). A reranker with a saved weight is fused at its saved top N
    (``fuse_reranker`` False: alone over ``rerank_top_n``).
    """
    embedding = resolve_model(embedding_model, "--embedding_model") if embedding_model else None
    reranker = resolve_model(reranker_model, "--reranker_model") if reranker_model else None
    assign_labels([spec for spec in (embedding, reranker) if spec is not None])
    saved = HybridFusion.saved(embedding.path) if embedding is not None else None
    first_stage = first_stage or ("bm25" if embedding is None else "hybrid" if saved else "dense")
    if first_stage != "bm25" and embedding is None:
        raise UserError(f"--first_stage {first_stage} needs --embedding_model")
    fusion = None
    if first_stage == "hybrid":
        fusion = HybridFusion(dense_weight=dense_weight) if dense_weight is not None else saved
        if fusion is None:
            logger.warning("--embedding_model %s saved no fusion weight: the hybrid uses 0.5", embedding_model)
            fusion = HybridFusion()
    embedding_settings = None
    if embedding is not None:
        handle = embedding_handle(embedding, max_seq_length, 32, None, None, None)
        embedding_settings = ModelSettings.of(embedding, max_seq_length, handle.run.query_prompt,
                                              handle.run.passage_prompt)
    weight, top_n = None, rerank_top_n
    if reranker is not None and fuse_reranker:
        chosen = saved_reranker_fusion(reranker, rerank_top_n)
        if chosen is not None:
            weight, top_n = chosen.weight, chosen.depth
            logger.info("--reranker_model %s: fused with its saved weight %g over the top %d", reranker_model,
                        weight, top_n)
    expander = choose_expansions(explicit, [embedding, reranker])
    name = embedding.label if embedding else "bm25"
    if fusion is not None:
        name = hybrid_name(name, fusion.label)
    if reranker is not None:
        name = rerank_name(name, reranker.label, weight)
    spec = SystemSpec(name, first_stage, embedding_settings, fusion,
                      ModelSettings.of(reranker, reranker_max_length) if reranker else None, top_n, weight)
    return spec.with_expansions(expander)

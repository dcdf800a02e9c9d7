"""Cross-encoder reranker fine-tuning pieces: model loading, labelled pairs, first stage, dev evaluator.

The reranker reads (query, passage) pairs and outputs one logit. It is trained pointwise with
binary cross-entropy on every labelled positive (label 1) and, per positive, mined hard negatives
and uniform random negatives (label 0), never a passage labelled relevant to the query. On the dev
split it reorders the top-N candidates of a first stage (BM25, or a fine-tuned embedding model),
the way it is used in a RAG pipeline.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from datasets import Dataset
from sentence_transformers.base.sampler import DefaultBatchSampler
from sentence_transformers.cross_encoder import CrossEncoderTrainer

from .bm25 import BM25Index
from .data import Corpus, LabelledQuery
from .dev_evaluation import DevMetricsEvaluator
from .fusion import DEFAULT_METRIC, choose_weight, fuse_all, ranking, run_from_arrays
from .metrics import DEFAULT_KS, TRAINING_METRICS, mean_metrics, query_metrics
from .models import clamp_max_seq_length, load_or_explain, model_position_limit
from .negatives import (DEFAULT_DENSE_WEIGHT, NegativeCandidates, draw_negatives, draw_random_negatives,
                        mine_candidates, mining_source)
from .ranking import bm25_top_k, dense_top_k, rerank_order, tie_ranks
from .retrieval import encode_passages, encode_queries

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- model


def load_reranker(name: str, max_seq_length: int, flag: str = "--base_model", device: str | None = None):
    """A one-logit CrossEncoder in fp32 (AMP, if any, is the Trainer's job), with a new head if needed.

    A plain encoder (BertModel, XLMRobertaModel, a sentence-transformers embedding model) has no
    sequence-classification head: transformers adds a randomly initialised one, which we say.
    """
    from sentence_transformers import CrossEncoder
    from transformers import AutoConfig

    config = load_or_explain(AutoConfig.from_pretrained, name, flag)
    architectures = list(getattr(config, "architectures", None) or [])
    has_head = any(a.endswith("ForSequenceClassification") for a in architectures)
    generative = any(a.endswith("ForCausalLM") for a in architectures)  # yes/no-logit rerankers (Qwen3-Reranker)
    model_kwargs: dict[str, Any] = {"dtype": torch.float32}  # never half: checkpoints saved in fp16 load as fp32
    if has_head and getattr(config, "num_labels", 1) != 1:
        logger.warning("%s %s has a %d-label classification head; replacing it with a new 1-logit reranker head, "
                       "which starts untrained", flag, name, config.num_labels)
        model_kwargs["ignore_mismatched_sizes"] = True
    elif not has_head and not generative:
        logger.warning("%s %s has no sequence-classification head (architectures: %s): adding a new 1-logit head, "
                       "which starts untrained (the 'base' dev metrics are those of a random head)", flag, name,
                       ", ".join(architectures) or "none recorded")
    model = load_or_explain(CrossEncoder, name, flag, num_labels=1, max_length=max_seq_length,
                            model_kwargs=model_kwargs, device=device)
    model.max_seq_length = clamp_max_seq_length(max_seq_length, model_position_limit(model))
    return model


# ---------------------------------------------------------------------------- training pairs


@dataclass
class ExampleGroup:
    """One labelled positive of a query with the negatives drawn for it."""

    query_index: int
    positive_id: str
    hard_ids: list[str]
    random_ids: list[str]


@dataclass
class RerankerExamples:
    """Rows (query, passage, label) for BinaryCrossEntropyLoss, and the groups they come from."""

    dataset: Dataset
    groups: list[ExampleGroup]
    relevant_by_query: dict[str, set[str]]
    hard_filled_randomly: int = 0

    @property
    def num_positives(self) -> int:
        return len(self.groups)

    @property
    def num_negatives(self) -> int:
        return len(self.dataset) - self.num_positives

    @property
    def pos_weight(self) -> float:
        """Negatives per positive: BCE's positive-class weight that balances the two classes."""
        return self.num_negatives / max(1, self.num_positives)


def relevant_by_query_text(queries: Sequence[LabelledQuery]) -> dict[str, set[str]]:
    """Every passage labelled relevant to a query text, across rows that repeat the query."""
    relevant: dict[str, set[str]] = {}
    for query in queries:
        relevant.setdefault(query.query.casefold(), set()).update(query.relevant_ids)
    return relevant


def clamp_negative_counts(queries: Sequence[LabelledQuery], corpus: Corpus, num_hard: int,
                          num_random: int) -> tuple[int, int]:
    """Cut the negatives per positive to what the corpus holds besides the query's relevant passages."""
    relevant = relevant_by_query_text(queries)
    available = len(corpus) - min((len(ids) for ids in relevant.values()), default=0)
    if num_hard > available:
        logger.warning("--num_hard_negatives %d is more than the corpus allows: it has at most %d passages not "
                       "labelled relevant to a query; using %d", num_hard, available, available)
        num_hard = available
    if num_random > available - num_hard:
        logger.warning("--num_random_negatives %d: only %d passage(s) per query are left after %d hard negatives; "
                       "using %d", num_random, available - num_hard, num_hard, available - num_hard)
        num_random = available - num_hard
    return num_hard, num_random


def build_reranker_examples(queries: Sequence[LabelledQuery], corpus: Corpus, candidates: NegativeCandidates | None,
                            num_hard: int, num_random: int, seed: int) -> RerankerExamples:
    """Per (query, labelled positive): the positive, ``num_hard`` hard and ``num_random`` random negatives.

    Hard negatives come from the query's mined candidates, preferring ones not yet used for another
    positive of the same query; when the mining window runs short, uniform negatives fill the slots.
    Random negatives are uniform over the corpus. No negative is ever labelled relevant to the query
    (in any row with the same text), and a positive's negatives are distinct. Queries whose corpus
    holds fewer non-relevant passages get fewer (see :func:`clamp_negative_counts`).
    """
    rng = random.Random(seed)
    relevant_by_query = relevant_by_query_text(queries)
    groups: list[ExampleGroup] = []
    filled = 0
    for qi, query in enumerate(queries):
        relevant = relevant_by_query[query.query.casefold()]
        pool = candidates.per_query[qi] if candidates is not None else []
        used: set[str] = set()
        for pid in query.relevant_ids:
            hard = draw_negatives(pool, num_hard, rng, exclude=relevant | used)
            if len(hard) < num_hard:  # fresh candidates exhausted: reuse those of the query's other positives
                hard += draw_negatives(pool, num_hard - len(hard), rng, exclude=relevant | set(hard))
            if len(hard) < num_hard:  # the mining window itself is too small
                extra = draw_random_negatives(corpus, num_hard - len(hard), rng, exclude=relevant | set(hard))
                filled += len(extra)
                hard += extra
            used.update(hard)
            rand = draw_random_negatives(corpus, num_random, rng, exclude=relevant | set(hard))
            groups.append(ExampleGroup(qi, pid, hard, rand))
    columns: dict[str, list] = {"query": [], "passage": [], "label": []}
    for group in groups:
        text = queries[group.query_index].query
        for pid, label in [(group.positive_id, 1.0)] + [(n, 0.0) for n in group.hard_ids + group.random_ids]:
            columns["query"].append(text)
            columns["passage"].append(corpus.text(pid))
            columns["label"].append(label)
    return RerankerExamples(Dataset.from_dict(columns), groups, relevant_by_query, filled)


# ---------------------------------------------------------------------------- batching


def pair_lengths(model, dataset: Dataset) -> list[int]:
    """Tokens per (query, passage) row after truncation to the model's max length."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:  # no text tokenizer: characters are a fine proxy for sorting
        return [len(q) + len(p) for q, p in zip(dataset["query"], dataset["passage"])]
    encoded = tokenizer(list(dataset["query"]), list(dataset["passage"]), truncation="longest_first",
                        max_length=model.max_seq_length)
    return [len(ids) for ids in encoded["input_ids"]]


class StepLengthGroupedBatchSampler(DefaultBatchSampler):
    """Random examples per optimizer step, as with plain shuffling, sorted by length into its micro-batches.

    Batches are padded to their longest pair (dynamic padding), so a micro-batch that mixes a short
    and a 512-token pair pays 512 tokens for both. Here the shuffled examples are cut into groups of
    one optimizer step (batch_size x gradient_accumulation_steps x processes) and each group is
    sorted by length before it is cut into micro-batches: every optimizer step sums the gradients of
    the same examples as without sorting (the loss is pointwise), with much less padding. Seeded by
    epoch, so a resumed run sees the same batches.
    """

    def __init__(self, dataset: Dataset, batch_size: int, drop_last: bool, valid_label_columns=None,
                 generator=None, seed: int = 0, *, lengths: Sequence[int], group_size: int) -> None:
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last,
                         valid_label_columns=valid_label_columns, generator=generator, seed=seed)
        self.lengths = list(lengths)
        self.group_size = max(batch_size, group_size - group_size % batch_size)

    def _batches(self) -> list[list[int]]:
        order = list(range(len(self.lengths)))
        random.Random(self.seed + self.epoch).shuffle(order)
        batches = []
        for start in range(0, len(order), self.group_size):
            group = sorted(order[start:start + self.group_size], key=self.lengths.__getitem__)
            batches += [group[i:i + self.batch_size] for i in range(0, len(group), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def __iter__(self):
        yield from self._batches()

    def __len__(self) -> int:
        full, rest = divmod(len(self.lengths), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)


class RerankerTrainer(CrossEncoderTrainer):
    """CrossEncoderTrainer whose training batches come from :class:`StepLengthGroupedBatchSampler`."""

    def __init__(self, *args: Any, lengths: Sequence[int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lengths = lengths

    def get_batch_sampler(self, dataset, batch_size, drop_last, valid_label_columns=None, generator=None, seed=0):
        if dataset is not self.train_dataset or len(dataset) != len(self.lengths):
            return super().get_batch_sampler(dataset, batch_size, drop_last, valid_label_columns, generator, seed)
        group = batch_size * self.args.gradient_accumulation_steps * self.args.world_size
        return StepLengthGroupedBatchSampler(dataset, batch_size, drop_last, valid_label_columns, generator, seed,
                                             lengths=self.lengths, group_size=group)


# ---------------------------------------------------------------------------- first stage


class FirstStage:
    """The retriever whose top-N the reranker reorders; the corpus is indexed and encoded once.

    ``kind`` "bm25", "dense" (the ``embedding_model``, a fine-tuned SentenceTransformer) or "hybrid"
    (both, scores fused with ``dense_weight``; :meth:`choose_dense_weight` picks it on dev queries).
    Default: dense when an embedding model is given, else BM25. The same index and passage
    embeddings serve hard-negative mining.
    """

    # Candidates taken from each of BM25 and the dense model before a hybrid fuses them.
    HYBRID_DEPTH = 100

    def __init__(self, corpus: Corpus, embedding_model=None, batch_size: int = 32, kind: str | None = None,
                 dense_weight: float = DEFAULT_DENSE_WEIGHT) -> None:
        kind = kind or ("dense" if embedding_model is not None else "bm25")
        if kind in ("dense", "hybrid") and embedding_model is None:
            from .errors import UserError

            raise UserError(f"--first_stage {kind} needs --embedding_model (the reranker itself cannot retrieve)")
        self.corpus = corpus
        self.embedding_model = embedding_model
        self.batch_size = batch_size
        self.bm25 = BM25Index(corpus.texts)
        self.passage_embeddings = None
        if embedding_model is not None:
            self.passage_embeddings = encode_passages(embedding_model, corpus.texts, batch_size=batch_size,
                                                      show_progress_bar=len(corpus) > 1000)
        self.name = kind
        self.dense_weight = dense_weight

    def runs(self, texts: Sequence[str], k: int, kind: str | None = None) -> list[dict[str, float]]:
        """Per query text, the top-k passages with their scores ({id: score}) of this first stage (or ``kind``)."""
        kind = kind or self.name
        if not texts:
            return []
        tie = tie_ranks(self.corpus.ids)
        if kind == "bm25":
            return [run_from_arrays(self.corpus.ids, i, s) for i, s in zip(*bm25_top_k(self.bm25, list(texts), k, tie))]
        q_emb = encode_queries(self.embedding_model, texts, batch_size=self.batch_size)
        depth = k if kind == "dense" else max(k, self.HYBRID_DEPTH)
        dense = [run_from_arrays(self.corpus.ids, i, s)
                 for i, s in zip(*dense_top_k(q_emb, self.passage_embeddings, depth, tie))]
        if kind == "dense":
            return dense
        lexical = [run_from_arrays(self.corpus.ids, i, s)
                   for i, s in zip(*bm25_top_k(self.bm25, list(texts), depth, tie))]
        fused = fuse_all(dense, lexical, self.dense_weight)
        return [{pid: run[pid] for pid in ranking(run)[:k]} for run in fused]

    def choose_dense_weight(self, queries: Sequence[LabelledQuery], k: int,
                            metric: str = DEFAULT_METRIC) -> float:
        """For a hybrid, the dense weight with the best ``metric`` on these (dev, never test) queries; kept."""
        if self.name == "hybrid" and queries:
            texts = [q.query for q in queries]
            depth = max(k, self.HYBRID_DEPTH)
            self.dense_weight, _ = choose_weight(self.runs(texts, depth, "dense"), self.runs(texts, depth, "bm25"),
                                                 [q.relevant_ids for q in queries], metric)
        return self.dense_weight

    def rank(self, texts: Sequence[str], k: int) -> list[list[str]]:
        """Top-k passage ids per query text."""
        if not texts:
            return []
        if self.name == "hybrid":
            return [ranking(run) for run in self.runs(texts, k)]
        if self.name == "dense":
            q_emb = encode_queries(self.embedding_model, texts, batch_size=self.batch_size)
            idx, _ = dense_top_k(q_emb, self.passage_embeddings, k, tie_ranks(self.corpus.ids))
        else:
            idx, _ = bm25_top_k(self.bm25, list(texts), k, tie_ranks(self.corpus.ids))
        return [[self.corpus.ids[i] for i in row] for row in idx]

    def mine(self, queries: Sequence[LabelledQuery], source: str, rank_range: tuple[int, int]) -> NegativeCandidates:
        return mine_candidates(queries, self.corpus, source, rank_range, dense_model=self.embedding_model,
                               batch_size=self.batch_size, bm25_index=self.bm25,
                               passage_embeddings=self.passage_embeddings, dense_weight=self.dense_weight)


@dataclass
class MinedData:
    """What the main process computes once and shares: training candidates and dev first-stage lists."""

    candidates: NegativeCandidates | None
    dev_candidates: list[list[str]]
    first_stage: str
    sources: list[str] = field(default_factory=list)
    # The first stage's score of every dev candidate (for fusing it with the reranker's), and the
    # hybrid's dense weight chosen on the dev queries (None for other first stages).
    dev_scores: list[dict[str, float]] = field(default_factory=list)
    dense_weight: float | None = None


def mine_and_retrieve(train_queries: Sequence[LabelledQuery], dev_queries: Sequence[LabelledQuery], corpus: Corpus,
                      embedding_model, source: str, rank_range: tuple[int, int], num_hard: int,
                      top_n: int, first_stage: str | None = None) -> MinedData:
    """Hard negatives of the training queries and the dev queries' first-stage candidates, from one index.

    ``first_stage`` (``--first_stage``) picks the dev retriever and, when given, the mining source
    too; a hybrid's dense weight is chosen on the dev queries first, and used for both.
    """
    stage = FirstStage(corpus, embedding_model, kind=first_stage)
    dense_weight = stage.choose_dense_weight(dev_queries, top_n) if stage.name == "hybrid" else None
    source = mining_source(first_stage, source)
    candidates = stage.mine(train_queries, source, rank_range) if num_hard and source != "none" else None
    runs = stage.runs([q.query for q in dev_queries], top_n)
    dev = [ranking(run) for run in runs]
    return MinedData(candidates, dev, stage.name, candidates.sources if candidates else [], runs, dense_weight)


# ---------------------------------------------------------------------------- dev evaluator


class DevRerankingEvaluator(DevMetricsEvaluator):
    """hit/recall/MRR/nDCG at k of the reranked first-stage top-N on the dev queries (trec_eval definitions).

    The candidate lists are fixed (computed once, before training), so the first stage's own metrics
    are computed once too (:attr:`first_stage_metrics`); each call only scores the (query, candidate)
    pairs. Rankings are by raw logit (no sigmoid, so no ties from saturation); equal scores keep the
    first-stage order. A query whose relevant passages are not among its candidates scores 0.

    Why not ``CrossEncoderRerankingEvaluator``: its MAP has no cutoff and it reports MRR/nDCG only at
    one k; we want the same definitions as ``evaluate_rag.py`` at every k.

    :meth:`fusion_on_dev` also fuses the reranker's score with the first stage's
    (``first_stage_scores``, one ``{id: score}`` per query; the candidates' rank order when not
    given) and picks the reranker's weight on these dev queries.
    """

    def __init__(self, corpus: Corpus, queries: Sequence[LabelledQuery], candidates: Sequence[Sequence[str]],
                 ks: Sequence[int] = DEFAULT_KS, names: Sequence[str] = TRAINING_METRICS, name: str = "dev",
                 batch_size: int = 32, primary_metric: str = "ndcg@5",
                 first_stage_scores: Sequence[dict[str, float]] | None = None) -> None:
        super().__init__()
        if len(candidates) != len(queries):
            raise ValueError(f"{len(candidates)} candidate lists for {len(queries)} queries")
        self.queries = list(queries)
        self.candidates = [list(c) for c in candidates]
        # Without scores, the first stage's order is its score (best first, evenly spaced).
        self.first_stage_scores = [{pid: float(run[pid]) for pid in cands} for run, cands in
                                   zip(first_stage_scores, self.candidates)] if first_stage_scores else \
            [{pid: -float(i) for i, pid in enumerate(cands)} for cands in self.candidates]
        self.ks = tuple(ks)
        self.names = tuple(names)
        self.name = name
        self.batch_size = batch_size
        self.primary_metric = primary_metric
        self.pairs = [(q.query, corpus.text(pid)) for q, cands in zip(self.queries, self.candidates) for pid in cands]
        self.first_stage_metrics = self.metrics_of(self.candidates)
        self.candidate_recall = float(np.mean([
            len(set(c) & set(q.relevant_ids)) / len(set(q.relevant_ids)) for q, c in zip(self.queries, self.candidates)
        ])) if self.queries else 0.0

    def metrics_of(self, rankings: Sequence[Sequence[str]]) -> dict[str, float]:
        return mean_metrics([query_metrics(r, q.relevant_ids, self.ks, self.names)
                             for r, q in zip(rankings, self.queries)])

    def scores(self, model) -> list[dict[str, float]]:
        """The reranker's raw logit of every candidate, per query."""
        scores = model.predict(self.pairs, batch_size=self.batch_size, show_progress_bar=False,
                               activation_fn=torch.nn.Identity(), convert_to_numpy=True)
        runs, start = [], 0
        for cands in self.candidates:
            runs.append({pid: float(x) for pid, x in zip(cands, scores[start:start + len(cands)])})
            start += len(cands)
        return runs

    def fusion_on_dev(self, model, metric: str | None = None) -> tuple[float, dict[str, float]]:
        """(reranker weight chosen on these dev queries by ``metric``, dev metrics of the fused ranking).

        Weight 1 is the reranker alone, 0 the first stage alone. The weight is chosen and reported on
        the same dev queries, so the fused dev numbers are a little optimistic; the test set never
        takes part.
        """
        metric = (metric or self.primary_metric).removeprefix(f"{self.name}_")  # "dev_ndcg@5" -> "ndcg@5"
        reranker_runs = self.scores(model)
        weight, _ = choose_weight(reranker_runs, self.first_stage_scores, [q.relevant_ids for q in self.queries],
                                  metric)
        fused = fuse_all(reranker_runs, self.first_stage_scores, weight)
        return weight, self.metrics_of([ranking(run) for run in fused])

    def rerank(self, model) -> list[list[str]]:
        scores = model.predict(self.pairs, batch_size=self.batch_size, show_progress_bar=False,
                               activation_fn=torch.nn.Identity(), convert_to_numpy=True)
        rankings, start = [], 0
        for cands in self.candidates:
            s = scores[start:start + len(cands)]
            start += len(cands)
            rankings.append([cands[i] for i in rerank_order(s)])
        return rankings

    def compute(self, model) -> dict[str, float]:
        return self.metrics_of(self.rerank(model))

    def get_config_dict(self) -> dict[str, Any]:
        return {"ks": list(self.ks), "queries": len(self.queries),
                "candidates_per_query": max((len(c) for c in self.candidates), default=0)}


# ---------------------------------------------------------------------------- outputs


def append_dev_metrics_to_card(output_dir: str | Path, table: str, description: str) -> None:
    """Add the first stage / base / fine-tuned dev table to the model card (README.md) the trainer wrote.

    It goes before the card's "Training Details" section (right after its own evaluation section), or at
    the end of a card without one.
    """
    card = Path(output_dir) / "README.md"
    text = card.read_text(encoding="utf-8") if card.exists() else ""
    section = f"## Dev metrics: first stage, base and fine-tuned reranker\n\n{description}\n\n```\n{table}\n```\n\n"
    anchor = "\n## Training Details"
    if anchor in text:
        head, _, tail = text.partition(anchor)
        text = f"{head.rstrip()}\n\n{section}{anchor.lstrip()}{tail}"
    else:
        text = f"{text.rstrip()}\n\n{section}".lstrip()
    card.write_text(text, encoding="utf-8")

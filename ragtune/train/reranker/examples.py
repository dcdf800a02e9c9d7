"""Reranker training examples: (query, passage, label) groups with mined and random negatives."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from datasets import Dataset

from ragtune.core.data import Corpus, LabelledQuery, count_pairs, query_key, relevant_ids_by_query
from ragtune.core.fusion import DEFAULT_METRIC, DEFAULT_WEIGHT_RULE, ranking
from ragtune.retrieval.first_stage import FirstStage, HybridFusion
from ragtune.retrieval.negatives import (
    NegativeCandidates,
    draw_negatives,
    draw_random_negatives,
    mine_candidates,
    mining_source,
)

logger = logging.getLogger(__name__)


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


def clamp_negative_counts(queries: Sequence[LabelledQuery], corpus: Corpus, num_hard: int,
                          num_random: int) -> tuple[int, int]:
    """Cut the negatives per positive to what the corpus holds besides the query's relevant passages."""
    relevant = relevant_ids_by_query(queries)
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
    relevant_by_query = relevant_ids_by_query(queries)
    groups: list[ExampleGroup] = []
    filled = 0
    for qi, query in enumerate(queries):
        relevant = relevant_by_query[query_key(query.query)]
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


def pair_lengths(model, dataset: Dataset) -> list[int]:
    """Tokens per (query, passage) row after truncation to the model's max length."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:  # no text tokenizer: characters are a fine proxy for sorting
        return [len(q) + len(p) for q, p in zip(dataset["query"], dataset["passage"])]
    encoded = tokenizer(list(dataset["query"]), list(dataset["passage"]), truncation="longest_first",
                        max_length=model.max_seq_length)
    return [len(ids) for ids in encoded["input_ids"]]


@dataclass
class MinedData:
    """What the main process computes once and shares: training candidates and dev first-stage lists."""

    candidates: NegativeCandidates | None
    dev_candidates: list[list[str]]
    first_stage: str
    sources: list[str] = field(default_factory=list)
    # The first stage's score of every dev candidate (for fusing it with the reranker's).
    dev_scores: list[dict[str, float]] = field(default_factory=list)
    # A hybrid first stage's fusion (metrics.json's record) and, when chosen here, how.
    fusion: dict[str, Any] | None = None
    # BM25's ranking of the dev queries: the reference every dev table shows.
    bm25_dev: list[list[str]] = field(default_factory=list)


def mine_and_retrieve(train_queries: Sequence[LabelledQuery], dev_queries: Sequence[LabelledQuery], corpus: Corpus,
                      embedding_model, source: str, rank_range: tuple[int, int], num_hard: int, top_n: int,
                      first_stage: str | None = None, saved_fusion: HybridFusion | None = None,
                      metric: str = DEFAULT_METRIC, rule: str = DEFAULT_WEIGHT_RULE,
                      expander: Callable[[str], str] | None = None) -> MinedData:
    """Hard negatives of the training queries and the dev queries' first-stage candidates, from one first stage.

    ``first_stage`` (``--first_stage``) picks the dev retriever and, when given, the mining source too.
    A hybrid fuses as the embedding script chose and saved (``saved_fusion``, applied exactly as chosen),
    else with a dense weight chosen here on the dev queries by ``rule``; both mining and dev use it. The first
    stage sees the queries expanded (``expander``: --expansions); the reranker scores them as asked.
    """
    stage = FirstStage(corpus, embedding_model, kind=first_stage, fusion=saved_fusion or HybridFusion(),
                       expander=expander)
    fusion = None
    if stage.name == "hybrid":
        if saved_fusion is None:
            choice = stage.choose_fusion(dev_queries, metric, rule)
            fusion = {**stage.fusion.record(), **choice.record(), "chosen_on": "dev (reranker script)"}
        else:
            fusion = {**saved_fusion.record(), "chosen_on": "the embedding model's metrics.json"}
    source = mining_source(first_stage, source)
    candidates = mine_candidates(train_queries, stage, source, rank_range) if num_hard and source != "none" else None
    texts = [q.query for q in dev_queries]
    runs = stage.runs(texts, top_n)
    return MinedData(candidates, [ranking(run) for run in runs], stage.name, candidates.sources if candidates else [],
                     runs, fusion, stage.rankings(texts, top_n, "bm25"))


def describe_examples(args, data, examples: RerankerExamples, mined: MinedData, num_hard: int,
                      num_random: int) -> dict[str, str]:
    """The start-up summary's reranker-specific lines: data, split, negatives and loss."""
    filled = (f"; {examples.hard_filled_randomly} hard slot(s) filled with uniform negatives (too few mined "
              f"candidates)" if examples.hard_filled_randomly else "")
    return {
        "data": f"corpus {data.corpus.source} ({len(data.corpus)} passages), queries {args.train_data} "
                f"({len(data.queries)}, {count_pairs(data.queries)} pairs)",
        "split": f"train {len(data.train)} queries / {len(examples.dataset)} examples ({examples.num_positives} "
                 f"positives, {examples.num_negatives} negatives), dev {len(data.dev)} queries",
        "negatives": f"per positive {num_hard} hard from {'+'.join(mined.sources) or 'uniform sampling'} ranks "
                     f"{args.hard_negative_range[0]}-{args.hard_negative_range[1]} and {num_random} random{filled}",
        "loss": f"binary cross-entropy, pos_weight {examples.pos_weight:.2f}",
    }

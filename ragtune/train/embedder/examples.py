"""Embedding training rows: (query, positive, hard negatives) from the labelled queries and mined candidates."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Sequence

from datasets import Dataset

from ragtune.core.data import Corpus, LabelledQuery, query_key, relevant_ids_by_query
from ragtune.retrieval.negatives import NegativeCandidates, draw_negatives, draw_random_negatives

logger = logging.getLogger(__name__)


@dataclass
class TrainingExamples:
    """Rows (query, positive, negative_1..n) plus, per row, the ids the batch sampler needs."""

    dataset: Dataset
    row_query: list[str]
    row_passage_ids: list[set[str]]
    relevant_by_query: dict[str, set[str]]
    negatives_per_row: int
    dropped_rows: int = 0  # (query, positive) pairs left out: the corpus had too few non-relevant passages


def build_training_examples(queries: Sequence[LabelledQuery], corpus: Corpus, candidates: NegativeCandidates | None,
                            num_hard_negatives: int, seed: int) -> TrainingExamples:
    """One row per (query, labelled positive), each with the same number of hard negatives.

    When a query has too few mined candidates, uniform random negatives (still never relevant)
    fill the row, because every row needs the same columns.
    """
    rng = random.Random(seed)
    columns: dict[str, list[str]] = {"anchor": [], "positive": []}
    for j in range(num_hard_negatives):
        columns[f"negative_{j + 1}"] = []
    row_query, row_ids = [], []
    dropped = 0
    relevant_by_query = relevant_ids_by_query(queries)
    for qi, query in enumerate(queries):
        key = query_key(query.query)
        # Exclude everything relevant to this query text, across duplicate rows too.
        relevant = relevant_by_query[key]
        for pid in query.relevant_ids:
            negatives: list[str] = []
            if num_hard_negatives and candidates is not None:
                negatives = draw_negatives(candidates.per_query[qi], num_hard_negatives, rng, exclude=relevant)
            if len(negatives) < num_hard_negatives:
                negatives += draw_random_negatives(corpus, num_hard_negatives - len(negatives), rng,
                                                   exclude=relevant | set(negatives))
            if len(negatives) < num_hard_negatives:  # a corpus with almost nothing but positives
                dropped += 1
                continue
            columns["anchor"].append(query.query)
            columns["positive"].append(corpus.text(pid))
            for j, neg in enumerate(negatives):
                columns[f"negative_{j + 1}"].append(corpus.text(neg))
            row_query.append(key)
            row_ids.append({pid, *negatives})
    if dropped:
        logger.warning("Left out %d of %d training pairs: the corpus has fewer than --num_hard_negatives %d passages "
                       "not relevant to their query", dropped, dropped + len(row_query), num_hard_negatives)
    return TrainingExamples(Dataset.from_dict(columns), row_query, row_ids, relevant_by_query, num_hard_negatives,
                            dropped)


def negatives_per_query_in_batch(batch_size: int, world_size: int, hard_negatives: int, gathered: bool) -> int:
    """How many passages each query is contrasted against (for the start-up summary)."""
    rows = batch_size * (world_size if gathered else 1)
    return rows * (1 + hard_negatives) - 1


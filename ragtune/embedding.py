"""Embedding-model fine-tuning pieces: training examples, false-negative-free batches, dev evaluator."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from datasets import Dataset
from sentence_transformers import SentenceTransformerTrainer
from sentence_transformers.base.evaluation import SentenceEvaluator
from sentence_transformers.base.sampler import DefaultBatchSampler

from .data import Corpus, LabelledQuery
from .metrics import DEFAULT_KS, TRAINING_METRICS, query_metrics, mean_metrics
from .negatives import NegativeCandidates, draw_negatives, draw_random_negatives
from .retrieval import encode_passages, encode_queries, top_k_dense

logger = logging.getLogger(__name__)


@dataclass
class TrainingExamples:
    """Rows (query, positive, negative_1..n) plus, per row, the ids the batch sampler needs."""

    dataset: Dataset
    row_query: list[str]
    row_passage_ids: list[set[str]]
    relevant_by_query: dict[str, set[str]]
    negatives_per_row: int


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
    relevant_by_query: dict[str, set[str]] = {}
    for query in queries:
        relevant_by_query.setdefault(query.query.casefold(), set()).update(query.relevant_ids)
    for qi, query in enumerate(queries):
        key = query.query.casefold()
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
                continue
            columns["anchor"].append(query.query)
            columns["positive"].append(corpus.text(pid))
            for j, neg in enumerate(negatives):
                columns[f"negative_{j + 1}"].append(corpus.text(neg))
            row_query.append(key)
            row_ids.append({pid, *negatives})
    return TrainingExamples(Dataset.from_dict(columns), row_query, row_ids, relevant_by_query, num_hard_negatives)


class NoFalseNegativesBatchSampler(DefaultBatchSampler):
    """Batches in which no passage is relevant to any other query of the batch.

    MultipleNegativesRankingLoss treats every other passage in the batch as a negative. With
    several labelled passages per query (and passages shared between queries), a plain shuffle
    puts a query's own relevant passages into its negatives. ``NoDuplicatesBatchSampler`` only
    compares texts, so it cannot see that passage 37 is relevant to a query whose row holds 15.
    This sampler knows the labels. With several processes (``gather_across_devices``), the rule
    holds for the global batch: each group of ``world_size`` consecutive batches, which accelerate
    hands out one per rank, is built as one.
    """

    def __init__(self, dataset: Dataset, batch_size: int, drop_last: bool, valid_label_columns=None,
                 generator=None, seed: int = 0, *, examples: TrainingExamples, world_size: int = 1) -> None:
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last,
                         valid_label_columns=valid_label_columns, generator=generator, seed=seed)
        self.examples = examples
        self.world_size = max(1, world_size)
        self._cache: dict[int, list[list[int]]] = {}

    def _batches(self, epoch: int) -> list[list[int]]:
        if epoch in self._cache:
            return self._cache[epoch]
        ex = self.examples
        order = list(range(len(ex.row_query)))
        random.Random(self.seed + epoch).shuffle(order)
        group_size = self.batch_size * self.world_size
        groups: list[list[int]] = []
        pending = order
        while pending:
            group: list[int] = []
            queries: set[str] = set()
            passages: set[str] = set()
            relevant: set[str] = set()
            deferred: list[int] = []
            for row in pending:
                if len(group) == group_size:
                    deferred.append(row)
                    continue
                q = ex.row_query[row]
                ids = ex.row_passage_ids[row]
                if q in queries or ids & relevant or ex.relevant_by_query[q] & passages:
                    deferred.append(row)
                    continue
                group.append(row)
                queries.add(q)
                passages |= ids
                relevant |= ex.relevant_by_query[q]
            groups.append(group)
            pending = deferred
        batches = []
        for group in groups:
            if len(group) < group_size and self.drop_last:
                continue
            for start in range(0, len(group), self.batch_size):
                batches.append(group[start:start + self.batch_size])
        self._cache = {epoch: batches}
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._batches(self.epoch)

    def __len__(self) -> int:
        return len(self._batches(self.epoch))


class EmbeddingTrainer(SentenceTransformerTrainer):
    """SentenceTransformerTrainer whose training batches come from :class:`NoFalseNegativesBatchSampler`.

    Overriding ``get_batch_sampler`` is the documented hook; a sampler factory placed in the
    training arguments would be pickled into every checkpoint's ``training_args.bin``.
    """

    def __init__(self, *args: Any, examples: TrainingExamples, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.examples = examples

    def get_batch_sampler(self, dataset, batch_size, drop_last, valid_label_columns=None, generator=None, seed=0):
        if dataset is not self.examples.dataset:  # evaluation datasets keep the default sampler
            return super().get_batch_sampler(dataset, batch_size, drop_last, valid_label_columns, generator, seed)
        return NoFalseNegativesBatchSampler(dataset, batch_size, drop_last, valid_label_columns, generator, seed,
                                            examples=self.examples, world_size=self.args.world_size)


class DevRetrievalEvaluator(SentenceEvaluator):
    """hit/recall/MRR/nDCG at k on the dev queries, over the full corpus, with trec_eval's definitions.

    Why not ``InformationRetrievalEvaluator``: its MAP divides by min(k, R) rather than R, and we
    want the dev numbers computed exactly as ``evaluate_rag.py`` computes them.
    """

    def __init__(self, corpus: Corpus, queries: Sequence[LabelledQuery], ks: Sequence[int] = DEFAULT_KS,
                 names: Sequence[str] = TRAINING_METRICS, name: str = "dev", batch_size: int = 32,
                 primary_metric: str = "ndcg@5") -> None:
        super().__init__()
        self.corpus = corpus
        self.queries = list(queries)
        self.ks = tuple(ks)
        self.names = tuple(names)
        self.name = name
        self.batch_size = batch_size
        self.primary_metric = primary_metric

    def compute(self, model) -> dict[str, float]:
        q_emb = encode_queries(model, [q.query for q in self.queries], batch_size=self.batch_size)
        p_emb = encode_passages(model, self.corpus.texts, batch_size=self.batch_size)
        idx, _ = top_k_dense(q_emb, p_emb, max(self.ks))
        per_query = [query_metrics([self.corpus.ids[i] for i in row], q.relevant_ids, self.ks, self.names)
                     for row, q in zip(idx, self.queries)]
        return mean_metrics(per_query)

    def __call__(self, model, output_path: str | None = None, epoch: float = -1, steps: int = -1) -> dict[str, float]:
        metrics = self.compute(model)
        logger.info("dev @ step %s: %s", steps,
                    ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.endswith("@5")))
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics

    def get_config_dict(self) -> dict[str, Any]:
        return {"ks": list(self.ks), "queries": len(self.queries), "passages": len(self.corpus)}


def negatives_per_query_in_batch(batch_size: int, world_size: int, hard_negatives: int, gathered: bool) -> int:
    """How many passages each query is contrasted against (for the start-up summary)."""
    rows = batch_size * (world_size if gathered else 1)
    return rows * (1 + hard_negatives) - 1

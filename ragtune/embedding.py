"""Embedding-model fine-tuning pieces: training examples, false-negative-free batches, dev evaluator."""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from datasets import Dataset
from sentence_transformers import SentenceTransformerTrainer
from sentence_transformers.base.sampler import DefaultBatchSampler

from .data import Corpus, LabelledQuery
from .dev_evaluation import DevMetricsEvaluator
from .metrics import DEFAULT_KS, TRAINING_METRICS, query_metrics, mean_metrics
from .negatives import NegativeCandidates, draw_negatives, draw_random_negatives
from .ranking import dense_top_k, tie_ranks
from .retrieval import encode_passages, encode_queries

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


class NoFalseNegativesBatchSampler(DefaultBatchSampler):
    """Batches in which no passage is relevant to any other query of the batch.

    MultipleNegativesRankingLoss treats every other passage in the batch as a negative. With
    several labelled passages per query (and passages shared between queries), a plain shuffle
    puts a query's own relevant passages into its negatives. ``NoDuplicatesBatchSampler`` only
    compares texts, so it cannot see that passage 37 is relevant to a query whose row holds 15.
    This sampler knows the labels. With several processes (``gather_across_devices``), the rule
    holds for the global batch: each group of ``world_size`` consecutive batches, which accelerate
    hands out one per rank, is built as one.

    Under ``accelerate launch`` (checked against accelerate 1.15's ``BatchSamplerShard``, which the
    Trainer wraps around this sampler): batch ``i`` goes to rank ``i % world_size``, but a sampler with
    an integer ``batch_size`` loses every group whose last batch is short, and a group of fewer than
    ``world_size`` batches shifts every later group across ranks. So with ``world_size > 1`` every
    group is exactly ``world_size`` batches of equal size (the gathered loss needs equal sizes too;
    a group that cannot be split evenly hands its extra rows to the next group), ``batch_size`` reads
    ``None`` (accelerate's "batches of varying size": yielded as they come), and ``rows_per_batch``
    holds the per-device batch size. A last group smaller than ``world_size`` rows is padded with rows
    of other queries that are compatible with it (seen twice in that epoch, like DistributedSampler's
    padding). Rows are left out of an epoch only when that is impossible (no compatible row exists) or,
    past ``epochs`` (``--max_steps``), when an epoch packs into more batches than the first ones; both are
    counted in ``left_out`` (epoch -> rows) and logged with their number.
    """

    def __init__(self, dataset: Dataset, batch_size: int, drop_last: bool, valid_label_columns=None,
                 generator=None, seed: int = 0, *, examples: TrainingExamples, world_size: int = 1,
                 epochs: int = 1) -> None:
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last,
                         valid_label_columns=valid_label_columns, generator=generator, seed=seed)
        self.examples = examples
        self.world_size = max(1, world_size)
        self.epochs = max(1, epochs)
        self.rows_per_batch = batch_size
        if self.world_size > 1:
            self.batch_size = None  # see the class docstring: accelerate then keeps short, equal batches
        self._cache: dict[int, list[list[int]]] = {}
        self._num_groups: int | None = None
        self.left_out: dict[int, int] = {}
        self._unfit: dict[int, int] = {}

    def _groups(self, epoch: int) -> list[list[int]]:
        """This epoch's global batches (row indices), as the labels allow them to be packed."""
        ex = self.examples
        order = list(range(len(ex.row_query)))
        random.Random(self.seed + epoch).shuffle(order)
        group_size = self.rows_per_batch * self.world_size
        groups: list[list[int]] = []
        pending = order
        unfit = 0
        while pending:
            group, deferred = self._fill_group(pending, group_size)
            extra = len(group) % self.world_size
            if extra and len(group) > extra:  # equal rows per rank; the extra rows start the next group
                group, deferred = group[:-extra], group[-extra:] + deferred
            elif extra:  # fewer rows than ranks, and nothing else fits with them: pad with compatible rows
                group = self._fill_group(order, self.world_size, start=group)[0]
                if len(group) < self.world_size:
                    unfit += len(group)
                    group = []
            if group and not (self.drop_last and len(group) < group_size):
                groups.append(group)
            pending = deferred
        self._unfit[epoch] = unfit
        return groups

    def _batches(self, epoch: int) -> list[list[int]]:
        """The epoch's batches, always ``len(self)`` of them.

        How tightly the labels let rows pack varies from one shuffle to the next, but the Trainer
        reads ``len()`` once and assumes every epoch has that many steps (for the schedule and for
        resuming mid-epoch). So every epoch has as many global batches as the fullest of the first
        ``epochs`` epochs: an epoch that packs tighter splits its largest global batches in two
        (a subset of a valid batch is valid). Past ``epochs`` (``--max_steps``), an epoch that packs
        looser leaves out its smallest global batches.
        """
        if epoch in self._cache:
            return self._cache[epoch]
        if self._num_groups is None:
            self._num_groups = max(len(self._groups(e)) for e in range(self.epochs))
        groups = self._groups(epoch)
        rng = random.Random(self.seed + epoch + 1)
        while len(groups) < self._num_groups:
            i = max(range(len(groups)), key=lambda j: len(groups[j]))
            half = len(groups[i]) // self.world_size // 2 * self.world_size
            if half and not self.drop_last:
                groups[i:i + 1] = [groups[i][:half], groups[i][half:]]
                continue
            # Nothing to split (one row per rank everywhere): one more global batch of rows seen twice.
            order = list(range(len(self.examples.row_query)))
            rng.shuffle(order)
            extra = self._fill_group(order, self.rows_per_batch * self.world_size)[0]
            groups.append(extra[:len(extra) // self.world_size * self.world_size] or groups[i])
        if len(groups) > self._num_groups:
            keep = sorted(sorted(range(len(groups)), key=lambda j: -len(groups[j]))[:self._num_groups])
            waiting = sum(len(g) for j, g in enumerate(groups) if j not in set(keep))
            logger.warning("Epoch %d: left out %d training row(s) (the labels packed this epoch into more batches "
                           "than the first --epochs had; only past --epochs, with --max_steps)", epoch, waiting)
            self.left_out[epoch] = self.left_out.get(epoch, 0) + waiting
            groups = [groups[j] for j in keep]
        if self._unfit.get(epoch):
            logger.warning("Epoch %d: left out %d training row(s): no rows of other queries fit with them in a "
                           "batch of %d processes", epoch, self._unfit[epoch], self.world_size)
            self.left_out[epoch] = self.left_out.get(epoch, 0) + self._unfit[epoch]
        batches = []
        for group in groups:
            size = self.rows_per_batch if self.world_size == 1 else len(group) // self.world_size
            for start in range(0, len(group), size):
                batches.append(group[start:start + size])
        self._cache = {epoch: batches}
        return batches

    def _fill_group(self, rows: list[int], size: int, start: Sequence[int] = ()) -> tuple[list[int], list[int]]:
        """Greedily add ``rows`` to ``start`` while no row's query has a relevant passage among the others."""
        ex = self.examples
        group: list[int] = []
        queries: set[str] = set()
        passages: set[str] = set()
        relevant: set[str] = set()
        deferred: list[int] = []
        for row in [*start, *(row for row in rows if row not in start)]:
            if len(group) == size:
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
        return group, deferred

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
        # drop_last=False even under DDP, where sentence-transformers forces dataloader_drop_last=True
        # against uneven last batches: this sampler never makes one, and would otherwise drop every
        # global batch the labels keep below batch_size x processes (most of them on small corpora).
        return NoFalseNegativesBatchSampler(
            dataset, batch_size, False, valid_label_columns, generator, seed, examples=self.examples,
            world_size=self.args.world_size, epochs=math.ceil(self.args.num_train_epochs))


class DevRetrievalEvaluator(DevMetricsEvaluator):
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
        idx, _ = dense_top_k(q_emb, p_emb, max(self.ks), tie_ranks(self.corpus.ids))  # evaluate_rag.py's top-k
        per_query = [query_metrics([self.corpus.ids[i] for i in row], q.relevant_ids, self.ks, self.names)
                     for row, q in zip(idx, self.queries)]
        return mean_metrics(per_query)

    def get_config_dict(self) -> dict[str, Any]:
        return {"ks": list(self.ks), "queries": len(self.queries), "passages": len(self.corpus)}


def negatives_per_query_in_batch(batch_size: int, world_size: int, hard_negatives: int, gathered: bool) -> int:
    """How many passages each query is contrasted against (for the start-up summary)."""
    rows = batch_size * (world_size if gathered else 1)
    return rows * (1 + hard_negatives) - 1


# ---------------------------------------------------------------------------- full batches, masked loss

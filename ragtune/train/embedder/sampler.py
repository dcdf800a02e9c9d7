"""Batches in which no passage is relevant to another query of the batch (no in-batch false negatives)."""

from __future__ import annotations

import logging
import math
import random
from typing import Iterator, Sequence

from datasets import Dataset
from sentence_transformers.base.sampler import DefaultBatchSampler

from ragtune.core.data import count_pairs
from ragtune.train.embedder.examples import TrainingExamples, negatives_per_query_in_batch

logger = logging.getLogger(__name__)


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



def describe_batches(args, data, examples: TrainingExamples, sampler: NoFalseNegativesBatchSampler,
                     world_size: int, gather: bool, model) -> dict:
    """The start-up summary's embedding-specific part (``TrainingRun.log_summary``'s keyword arguments).

    The labels can keep global batches below batch_size x processes (no passage relevant to another query
    of the batch), so the optimizer steps and the in-batch negatives are counted from the sampler itself.
    """
    batches_per_epoch = len(sampler)
    mean_rows = sum(map(len, sampler)) / max(1, batches_per_epoch // world_size)
    steps = (args.max_steps if args.max_steps > 0 else
             math.ceil(batches_per_epoch / world_size / args.gradient_accumulation_steps) * args.epochs)
    negatives = (mean_rows if gather else mean_rows / world_size) * (1 + examples.negatives_per_row) - 1
    most = negatives_per_query_in_batch(args.batch_size, world_size, examples.negatives_per_row, gather)
    return {
        "model": f"{args.base_model}, max_seq_length {model.max_seq_length}",
        "steps": steps,
        "batch_note": f"; the labels fill global batches with {mean_rows:.1f} rows on average",
        "fields": {
            "data": f"corpus {data.corpus.source} ({len(data.corpus)} passages), queries {args.train_data} "
                    f"({len(data.queries)}, {count_pairs(data.queries)} pairs)",
            "split": f"train {len(data.train)} queries / {len(examples.dataset)} examples, dev {len(data.dev)} "
                     f"queries",
            "dropped rows": f"{examples.dropped_rows} (too few negatives in the corpus)",
            "negatives": f"{most} per query at most ({examples.negatives_per_row} hard, in-batch"
                         f"{' gathered across processes' if gather else ''}), {negatives:.1f} on average",
        },
    }

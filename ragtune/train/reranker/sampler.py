"""Batches of similar length for the reranker, fixed per optimizer step."""

from __future__ import annotations

import random
from typing import Sequence

from datasets import Dataset
from sentence_transformers.base.sampler import DefaultBatchSampler


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


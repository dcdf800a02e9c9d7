"""The reranker's Trainer: CrossEncoderTrainer with length-grouped batches."""

from __future__ import annotations

from typing import Any, Sequence

from sentence_transformers.cross_encoder import CrossEncoderTrainer

from ragtune.train.reranker.sampler import StepLengthGroupedBatchSampler


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


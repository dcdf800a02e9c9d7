"""The embedding model's Trainer: SentenceTransformerTrainer with false-negative-free batches."""

from __future__ import annotations

import math
from typing import Any

from sentence_transformers import SentenceTransformerTrainer

from ragtune.train.embedder.examples import TrainingExamples
from ragtune.train.embedder.sampler import NoFalseNegativesBatchSampler


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


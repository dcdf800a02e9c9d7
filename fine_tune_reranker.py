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
import gc
import logging
from typing import Sequence

from ragtune.cli import (HelpFormatter, Parser, add_data_args, add_negative_args, add_output_args, add_training_args,
                         args_to_config, default_output_dir, validate_reranker_args, validate_training_args)
from ragtune.data import count_pairs, load_corpus, load_queries, split_queries
from ragtune.errors import run_main
from ragtune.metrics import DEFAULT_KS, TRAINING_METRICS
from ragtune.training import (FINISHED_MARKER, InterruptCheckpointCallback, SaveBestCheckpointCallback,
                              compute_on_main_and_share, dev_metrics_from_history, early_stopping_callbacks,
                              exit_after_interrupt, format_metrics_table, is_main_process, local_rank_is_main,
                              plot_training_curves, prepare_output_dir, resolve_precision, resolve_resume,
                              setup_logging, total_optimizer_steps, trainer_kwargs, write_json)

logger = logging.getLogger("fine_tune_reranker")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(description=__doc__, formatter_class=HelpFormatter)
    model = parser.add_argument_group("model")
    model.add_argument("--base_model", default="BAAI/bge-reranker-v2-m3",
                       help="Reranker to start from (e.g. namdp-ptit/ViRanker for Vietnamese), as a Hub id or a "
                            "local folder. A plain encoder gets a new 1-logit head, which starts untrained.")
    model.add_argument("--embedding_model", default=None,
                       help="Optional fine-tuned embedding model (e.g. the output of fine_tune_bge_m3.py): a "
                            "second source of hard negatives, and the first stage in dev evaluation instead of BM25.")
    model.add_argument("--rerank_top_n", type=int, default=20,
                       help="Dev evaluation reranks this many first-stage candidates per query.")
    add_data_args(parser)
    add_output_args(parser, default_output_dir=None)
    add_training_args(parser, epochs=4, batch_size=3, lr=2e-5, warmup_steps=0.1, max_seq_length=512,
                      evaluation_steps=10, checkpoint_save_steps=20, gradient_accumulation_steps=8)
    # Ranks 1-30: the reranker's job is to order the first stage's top candidates, so it learns from them.
    add_negative_args(parser, num_hard_negatives=2, rank_range=(1, 30), num_random_negatives=1)
    return parser


def main(argv: Sequence[str] | None = None, callbacks: Sequence = ()) -> int:
    """Run the script; ``callbacks`` are extra TrainerCallbacks (benchmarks and tests observe training)."""
    args = build_parser().parse_args(argv)
    setup_logging(local_rank_is_main())
    args.output_dir = args.output_dir or default_output_dir(args.base_model, "reranker")
    validate_training_args(args, min_batch_size=1)
    validate_reranker_args(args)

    # Data: everything is checked before anything is written.
    corpus = load_corpus(args.corpus)
    queries = load_queries(args.train_data, corpus)
    train_queries, dev_queries = split_queries(queries, args.dev_ratio, args.seed)
    prepare_output_dir(args.output_dir, args.overwrite_output_dir, args.resume_from_checkpoint)
    resume_from = resolve_resume(args.resume_from_checkpoint, args.output_dir, args.overwrite_output_dir)

    # Heavy imports after the cheap checks, so a typo fails in a second.
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    from ragtune.models import load_or_explain
    from ragtune.reranker import (DevRerankingEvaluator, RerankerTrainer, append_dev_metrics_to_card,
                                  build_reranker_examples, clamp_negative_counts, load_reranker, mine_and_retrieve,
                                  pair_lengths)

    num_hard, num_random = clamp_negative_counts(train_queries, corpus, args.num_hard_negatives,
                                                 args.num_random_negatives)
    precision = resolve_precision(args.precision)
    metric_key = f"eval_dev_{args.metric_for_best_model}"
    training_args = CrossEncoderTrainingArguments(
        **trainer_kwargs(args, precision, bool(dev_queries), metric_key, args.output_dir,
                         eval_on_start=resume_from is None),
        dataloader_pin_memory=torch.cuda.is_available())
    # Each process loads onto its own device (not all onto the first GPU); weights stay fp32.
    device = str(training_args.device)
    embedding_model = None
    if args.embedding_model:
        embedding_model = load_or_explain(SentenceTransformer, args.embedding_model, "--embedding_model",
                                          device=device)
    model = load_reranker(args.base_model, args.max_seq_length, device=device)

    # Hard negatives and the dev first stage: one index of the corpus, on the main process, shared.
    mined = compute_on_main_and_share(lambda: mine_and_retrieve(
        train_queries, dev_queries, corpus, embedding_model, args.hard_negative_source,
        tuple(args.hard_negative_range), num_hard, args.rerank_top_n))
    del embedding_model  # not needed while training: give its memory back
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    examples = build_reranker_examples(train_queries, corpus, mined.candidates, num_hard, num_random, args.seed)

    steps = total_optimizer_steps(len(examples.dataset), args.batch_size, args.gradient_accumulation_steps,
                                  args.epochs, training_args.world_size, args.max_steps)
    logger.info(
        "Data: corpus %s (%d passages), queries %s (%d, %d pairs) -> train %d queries / %d examples "
        "(%d positives, %d negatives), dev %d queries",
        corpus.source, len(corpus), args.train_data, len(queries), count_pairs(queries), len(train_queries),
        len(examples.dataset), examples.num_positives, examples.num_negatives, len(dev_queries))
    logger.info(
        "Training: %s on %s, precision %s, %d process(es), effective batch %d (= %d x %d accumulation x %d), "
        "per positive %d hard negative(s) from %s ranks %d-%d and %d random, BCE pos_weight %.2f, "
        "%d optimizer steps, warm-up %s, output %s",
        args.base_model, training_args.device, precision.name, training_args.world_size,
        args.batch_size * args.gradient_accumulation_steps * training_args.world_size, args.batch_size,
        args.gradient_accumulation_steps, training_args.world_size, num_hard,
        "+".join(mined.sources) or "uniform sampling", *args.hard_negative_range, num_random,
        examples.pos_weight, steps, args.warmup_steps, args.output_dir)
    if examples.hard_filled_randomly:
        logger.info("%d hard-negative slot(s) had too few mined candidates (--hard_negative_range %d %d) and were "
                    "filled with uniform negatives", examples.hard_filled_randomly, *args.hard_negative_range)
    if 1 <= args.warmup_steps and args.warmup_steps >= steps:
        logger.warning("--warmup_steps %d covers all %d optimizer steps: the learning rate never reaches --lr %g",
                       args.warmup_steps, steps, args.lr)

    evaluator = None
    if dev_queries:
        evaluator = DevRerankingEvaluator(corpus, dev_queries, mined.dev_candidates,
                                          batch_size=training_args.per_device_eval_batch_size,
                                          primary_metric=args.metric_for_best_model)
        logger.info("Dev: reranking the top %d of %s; %.1f%% of the relevant passages are among them (the ceiling "
                    "for recall)", args.rerank_top_n, mined.first_stage, 100 * evaluator.candidate_recall)
    loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(examples.pos_weight))
    interrupt = InterruptCheckpointCallback()
    trainer = RerankerTrainer(
        model=model, args=training_args, train_dataset=examples.dataset, loss=loss, evaluator=evaluator,
        lengths=pair_lengths(model, examples.dataset),
        callbacks=[interrupt, SaveBestCheckpointCallback(), *early_stopping_callbacks(args, bool(dev_queries)),
                   *callbacks])

    interrupt.install()
    try:
        trainer.train(resume_from_checkpoint=resume_from)
    finally:
        interrupt.uninstall()
    if interrupt.received:
        return exit_after_interrupt(interrupt, args.output_dir)

    # The Trainer has loaded the best checkpoint (load_best_model_at_end): it is the final model.
    history = dev_metrics_from_history(trainer.state.log_history, "eval_dev_")
    first_stage = evaluator.first_stage_metrics if evaluator else {}
    before = history[0][1] if history else {}
    after = evaluator(model, epoch=trainer.state.epoch, steps=trainer.state.global_step) if evaluator else {}
    after = {k.removeprefix("dev_"): v for k, v in after.items()}
    if not is_main_process():
        return 0
    trainer.save_model(args.output_dir)
    plot_training_curves(trainer.state.log_history, "eval_dev_", f"{args.output_dir}/training_curves.png")
    columns = {f"first stage ({mined.first_stage})": first_stage, "base reranker": before, "fine-tuned": after}
    table = format_metrics_table(columns, TRAINING_METRICS, DEFAULT_KS) if evaluator else ""
    if evaluator:
        append_dev_metrics_to_card(args.output_dir, table, (
            f"{len(dev_queries)} held-out queries; the reranker reorders the top {args.rerank_top_n} passages of "
            f"{mined.first_stage} (base model: {args.base_model}). Binary relevance, trec_eval definitions."))
    write_json(f"{args.output_dir}/{FINISHED_MARKER}", {
        "base_model": args.base_model,
        "first_stage": mined.first_stage,
        "dev_metrics": {"first_stage": first_stage, "before": before, "after": after},
        "dev_candidate_recall": evaluator.candidate_recall if evaluator else None,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_metric": {args.metric_for_best_model: trainer.state.best_metric},
        "global_step": trainer.state.global_step,
        "train_queries": len(train_queries), "dev_queries": len(dev_queries),
        "train_examples": len(examples.dataset), "train_positives": examples.num_positives,
        "hard_negatives_per_positive": num_hard, "random_negatives_per_positive": num_random,
        "pos_weight": examples.pos_weight, "hard_negative_sources": mined.sources,
        "config": args_to_config(args),
    })
    if evaluator:
        print(f"\nDev metrics ({len(dev_queries)} held-out queries, top {args.rerank_top_n} of {mined.first_stage} "
              f"reranked):\n{table}\n")
    logger.info("Saved the fine-tuned reranker to %s (load with CrossEncoder(%r))", args.output_dir, args.output_dir)
    return 0


if __name__ == "__main__":
    run_main(main)

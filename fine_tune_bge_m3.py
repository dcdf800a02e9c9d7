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
import math
import os
from typing import Sequence

from ragtune.cli import (HelpFormatter, Parser, add_data_args, add_negative_args, add_output_args, add_training_args,
                         args_to_config, default_output_dir, validate_training_args)
from ragtune.data import count_pairs, load_corpus, load_queries, split_queries
from ragtune.errors import run_main
from ragtune.metrics import DEFAULT_KS, TRAINING_METRICS
from ragtune.training import (DEBUG_DIR_ENV, FINISHED_MARKER, InterruptCheckpointCallback, SaveBestCheckpointCallback,
                              compute_on_main_and_share, debug_dump, dev_metrics_from_history, early_stopping_callbacks, exit_after_interrupt,
                              format_metrics_table, is_main_process, local_rank_is_main, plot_training_curves,
                              prepare_output_dir, resolve_precision, resolve_resume, setup_logging, trainer_kwargs,
                              warn_if_process_count_changed, write_json)

logger = logging.getLogger("fine_tune_bge_m3")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(description=__doc__, formatter_class=HelpFormatter)
    model = parser.add_argument_group("model")
    model.add_argument("--base_model", default="BAAI/bge-m3",
                       help="Model to start from: a sentence-transformers model or a plain Hugging Face encoder, "
                            "as a Hub id or a local folder.")
    model.add_argument("--freeze_layers", type=int, default=4,
                       help="Freeze the embeddings and the bottom N encoder layers (0 trains everything).")
    model.add_argument("--query_prompt", default=None,
                       help="Text put before every query, e.g. 'query: ' for E5 models. Saved in the model so that "
                            "encode_query applies it. Default: the model's own (none for bge-m3).")
    model.add_argument("--passage_prompt", default=None,
                       help="Text put before every passage, e.g. 'passage: '. Saved in the model for "
                            "encode_document. Default: the model's own (none for bge-m3).")
    add_data_args(parser)
    add_output_args(parser, default_output_dir=None)
    add_training_args(parser, epochs=5, batch_size=8, lr=1e-5, warmup_steps=100, max_seq_length=384,
                      evaluation_steps=15, checkpoint_save_steps=30)
    add_negative_args(parser, num_hard_negatives=1)
    parser.add_argument("--no_gather_across_devices", dest="gather_across_devices", action="store_false",
                        help="With several processes, do not share in-batch negatives across them.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(local_rank_is_main())
    args.output_dir = args.output_dir or default_output_dir(args.base_model, "finetuned")
    validate_training_args(args, min_batch_size=2)

    # Data: everything is checked before anything is written.
    corpus = load_corpus(args.corpus)
    queries = load_queries(args.train_data, corpus)
    train_queries, dev_queries = split_queries(queries, args.dev_ratio, args.seed)
    prepare_output_dir(args.output_dir, args.overwrite_output_dir, args.resume_from_checkpoint)
    resume_from = resolve_resume(args.resume_from_checkpoint, args.output_dir, args.overwrite_output_dir)

    # Heavy imports after the cheap checks, so a typo fails in a second.
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments
    from sentence_transformers.util.distributed import distributed_evaluation

    from ragtune.embedding import (DevRetrievalEvaluator, EmbeddingTrainer, GatherRecordingMNRL,
                                   NoFalseNegativesBatchSampler, build_training_examples,
                                   negatives_per_query_in_batch)
    from ragtune.models import freeze_bottom_layers, load_or_explain
    from ragtune.negatives import mine_candidates

    model = load_or_explain(SentenceTransformer, args.base_model, "--base_model")
    model.max_seq_length = args.max_seq_length
    if args.query_prompt is not None:
        model.prompts["query"] = args.query_prompt
    if args.passage_prompt is not None:
        model.prompts["document"] = args.passage_prompt
    query_prompt, passage_prompt = model.prompts.get("query") or "", model.prompts.get("document") or ""
    freeze_bottom_layers(model, args.freeze_layers)

    precision = resolve_precision(args.precision)
    metric_key = f"eval_dev_{args.metric_for_best_model}"
    training_args = SentenceTransformerTrainingArguments(
        **trainer_kwargs(args, precision, bool(dev_queries), metric_key, args.output_dir,
                         eval_on_start=resume_from is None, find_unused_parameters=True))
    world_size = training_args.world_size
    # Under accelerate launch every rank resumes from the checkpoint the main process found.
    resume_from = compute_on_main_and_share(lambda found=resume_from: found)
    warn_if_process_count_changed(resume_from, world_size)
    if dev_queries:
        training_args.eval_on_start = resume_from is None

    # Hard negatives: mined once on the main process, shared with every rank.
    candidates = None
    if args.num_hard_negatives and args.hard_negative_source != "none":
        candidates = compute_on_main_and_share(lambda: mine_candidates(
            train_queries, corpus, args.hard_negative_source, tuple(args.hard_negative_range), dense_model=model))
    examples = build_training_examples(train_queries, corpus, candidates, args.num_hard_negatives, args.seed)
    prompts = {"anchor": query_prompt, "positive": passage_prompt,
               **{f"negative_{j + 1}": passage_prompt for j in range(examples.negatives_per_row)}}
    if query_prompt or passage_prompt:
        training_args.prompts = prompts

    gather = args.gather_across_devices and world_size > 1
    sampler = NoFalseNegativesBatchSampler(examples.dataset, args.batch_size, False, seed=args.seed,
                                           examples=examples, world_size=world_size, epochs=args.epochs)
    batches_per_epoch = len(sampler)
    # The labels can keep global batches below batch_size x processes (no passage relevant to another query).
    mean_rows = sum(map(len, sampler)) / max(1, batches_per_epoch // world_size)
    steps = (args.max_steps if args.max_steps > 0 else
             math.ceil(batches_per_epoch / world_size / args.gradient_accumulation_steps) * args.epochs)
    logger.info(
        "Data: corpus %s (%d passages), queries %s (%d, %d pairs) -> train %d queries / %d examples, dev %d queries",
        corpus.source, len(corpus), args.train_data, len(queries), count_pairs(queries), len(train_queries),
        len(examples.dataset), len(dev_queries))
    logger.info(
        "Training: %s on %s, precision %s, %d process(es), effective batch %d (= %d x %d accumulation x %d), "
        "%d negatives per query (%d hard, in-batch%s; %.1f on average: the labels fill global batches with "
        "%.1f rows on average), %d optimizer steps, warm-up %s, output %s",
        args.base_model, training_args.device, precision.name, world_size,
        args.batch_size * args.gradient_accumulation_steps * world_size, args.batch_size,
        args.gradient_accumulation_steps, world_size,
        negatives_per_query_in_batch(args.batch_size, world_size, examples.negatives_per_row, gather),
        examples.negatives_per_row, " gathered across processes" if gather else "",
        (mean_rows if gather else mean_rows / world_size) * (1 + examples.negatives_per_row) - 1, mean_rows,
        steps, args.warmup_steps, args.output_dir)
    if 1 <= args.warmup_steps and args.warmup_steps >= steps:
        logger.warning("--warmup_steps %d covers all %d optimizer steps: the learning rate never reaches --lr %g",
                       args.warmup_steps, steps, args.lr)

    evaluator = None
    if dev_queries:
        evaluator = DevRetrievalEvaluator(corpus, dev_queries, primary_metric=args.metric_for_best_model)
    # Test hook: with $RAGTUNE_DEBUG_DIR set, the same loss records what each query was contrasted with.
    loss_class = GatherRecordingMNRL if os.environ.get(DEBUG_DIR_ENV) else MultipleNegativesRankingLoss
    loss = loss_class(model, gather_across_devices=gather)
    interrupt = InterruptCheckpointCallback()
    trainer = EmbeddingTrainer(
        model=model, args=training_args, train_dataset=examples.dataset, loss=loss, evaluator=evaluator,
        examples=examples,
        callbacks=[interrupt, SaveBestCheckpointCallback(), *early_stopping_callbacks(args, bool(dev_queries))])

    interrupt.install()
    try:
        trainer.train(resume_from_checkpoint=resume_from)
    finally:
        interrupt.uninstall()
    interrupt.synchronize(training_args.device)  # a signal after the last step: every rank or none stops
    debug_dump("fine_tune_bge_m3", lambda: {
        "dev_queries": [q.query for q in dev_queries], "train_rows": examples.dataset.to_dict(),
        "resume_from": resume_from, "global_step": trainer.state.global_step, "interrupted": interrupt.received,
        "steps_per_epoch": batches_per_epoch // world_size, "max_steps": trainer.state.max_steps,
        "loss_records": getattr(loss, "records", None)})
    if interrupt.received:
        return exit_after_interrupt(interrupt, args.output_dir)

    # The Trainer has loaded the best checkpoint (load_best_model_at_end): it is the final model.
    history = dev_metrics_from_history(trainer.state.log_history, "eval_dev_")
    before = history[0][1] if history else {}
    # Final dev metrics on the main process only; under DDP the other ranks encode their share of it.
    with distributed_evaluation(model) as run_evaluator:
        after = evaluator(model, epoch=trainer.state.epoch, steps=trainer.state.global_step) \
            if evaluator and run_evaluator else {}
    after = {k.removeprefix("dev_"): v for k, v in after.items()}
    if not is_main_process():
        return 0
    trainer.save_model(args.output_dir)
    plot_training_curves(trainer.state.log_history, "eval_dev_", f"{args.output_dir}/training_curves.png")
    write_json(f"{args.output_dir}/{FINISHED_MARKER}", {
        "base_model": args.base_model,
        "dev_metrics": {"before": before, "after": after},
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_metric": {args.metric_for_best_model: trainer.state.best_metric},
        "global_step": trainer.state.global_step,
        "train_queries": len(train_queries), "dev_queries": len(dev_queries),
        "train_examples": len(examples.dataset), "hard_negative_sources": candidates.sources if candidates else [],
        "config": args_to_config(args),
    })
    if before or after:
        table = format_metrics_table({"base": before, "fine-tuned": after}, TRAINING_METRICS, DEFAULT_KS)
        print(f"\nDev metrics ({len(dev_queries)} held-out queries):\n{table}\n")
        key = args.metric_for_best_model
        if after.get(key, 0.0) < before.get(key, 0.0):
            logger.warning("The fine-tuned model scores below the base model on dev %s (%.4f < %.4f): try a lower "
                           "--lr, fewer --freeze_layers or more data", key, after[key], before[key])
    logger.info("Saved the fine-tuned model to %s (load with SentenceTransformer(%r))", args.output_dir,
                args.output_dir)
    return 0


if __name__ == "__main__":
    run_main(main)

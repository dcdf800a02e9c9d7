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
from typing import Sequence

from ragtune.train.arguments import (add_data_args, add_negative_args, add_output_args, add_training_args,
                                     validate_training_args)
from ragtune.core.cli import new_parser
from ragtune.audit import add_audit_args
from ragtune.core.data import count_pairs, load_corpus, load_queries, split_queries
from ragtune.core.errors import run_main
from ragtune.core.metrics import DEFAULT_KS, TRAINING_METRICS, mean_metrics, query_metrics
from ragtune.core.fusion import ranking
from ragtune.train.runner import TrainingRun
from ragtune.train.outputs import dev_metrics_from_history, format_metrics_table
from ragtune.train.distributed import is_main_process

logger = logging.getLogger("fine_tune_bge_m3")


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
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
    add_audit_args(parser)
    add_training_args(parser, epochs=5, batch_size=8, lr=1e-5, warmup_steps=100, max_seq_length=384,
                      evaluation_steps=15, checkpoint_save_steps=30)
    add_negative_args(parser, num_hard_negatives=1)
    parser.add_argument("--no_gather_across_devices", dest="gather_across_devices", action="store_false",
                        help="With several processes, do not share in-batch negatives across them.")
    return parser


def main(argv: Sequence[str] | None = None, callbacks: Sequence = ()) -> int:
    """Run the script; ``callbacks`` are extra TrainerCallbacks (tests and benchmarks observe training)."""
    args = build_parser().parse_args(argv)
    run = TrainingRun(args, output_suffix="finetuned", callbacks=callbacks)
    validate_training_args(args, min_batch_size=2)

    # Data: everything is checked before anything is written.
    corpus = load_corpus(args.corpus)
    queries = load_queries(args.train_data, corpus)
    train_queries, dev_queries = split_queries(queries, args.dev_ratio, args.seed)
    corpus, train_queries, dev_queries = run.audit(corpus, train_queries, dev_queries)

    # Heavy imports after the cheap checks, so a typo fails in a second.
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments
    from sentence_transformers.util.distributed import distributed_evaluation

    from ragtune.train.embedder.evaluator import DevRetrievalEvaluator
    from ragtune.train.embedder.trainer import EmbeddingTrainer
    from ragtune.train.embedder.sampler import NoFalseNegativesBatchSampler
    from ragtune.train.embedder.examples import build_training_examples, negatives_per_query_in_batch
    from ragtune.core.models import clamp_max_seq_length, freeze_bottom_layers, load_or_explain, model_position_limit
    from ragtune.retrieval.negatives import mine_candidates, mining_source
    from ragtune.retrieval.first_stage import FirstStage

    # Model: loaded and checked (frozen layers, sequence length) before the output dir is touched.
    model = load_or_explain(SentenceTransformer, args.base_model, "--base_model")
    model.max_seq_length = clamp_max_seq_length(args.max_seq_length, model_position_limit(model))
    if args.query_prompt is not None:
        model.prompts["query"] = args.query_prompt
    if args.passage_prompt is not None:
        model.prompts["document"] = args.passage_prompt
    query_prompt, passage_prompt = model.prompts.get("query") or "", model.prompts.get("document") or ""
    freeze_bottom_layers(model, args.freeze_layers)

    training_args = run.training_arguments(SentenceTransformerTrainingArguments, has_dev=bool(dev_queries),
                                           find_unused_parameters=True)
    world_size = run.world_size

    # Hard negatives: mined once on the main process, shared with every rank.
    candidates = None
    source = mining_source(args.first_stage, args.hard_negative_source)
    if args.num_hard_negatives and source != "none":
        candidates = run.share(lambda: mine_candidates(
            train_queries, corpus, source, tuple(args.hard_negative_range), dense_model=model))
    examples = build_training_examples(train_queries, corpus, candidates, args.num_hard_negatives, args.seed)
    if query_prompt or passage_prompt:
        training_args.prompts = {"anchor": query_prompt, "positive": passage_prompt,
                                 **{f"negative_{j + 1}": passage_prompt for j in range(examples.negatives_per_row)}}

    gather = args.gather_across_devices and world_size > 1
    sampler = NoFalseNegativesBatchSampler(examples.dataset, args.batch_size, False, seed=args.seed,
                                           examples=examples, world_size=world_size, epochs=args.epochs)
    batches_per_epoch = len(sampler)
    # The labels can keep global batches below batch_size x processes (no passage relevant to another query).
    mean_rows = sum(map(len, sampler)) / max(1, batches_per_epoch // world_size)
    steps = (args.max_steps if args.max_steps > 0 else
             math.ceil(batches_per_epoch / world_size / args.gradient_accumulation_steps) * args.epochs)
    negatives = (mean_rows if gather else mean_rows / world_size) * (1 + examples.negatives_per_row) - 1
    run.log_summary("Fine-tuning the embedding model", {
        "model": f"{args.base_model} on {training_args.device}, max_seq_length {model.max_seq_length}",
        "data": f"corpus {corpus.source} ({len(corpus)} passages), queries {args.train_data} ({len(queries)}, "
                f"{count_pairs(queries)} pairs)",
        "split": f"train {len(train_queries)} queries / {len(examples.dataset)} examples, dev {len(dev_queries)} "
                 f"queries",
        "dropped rows": f"{examples.dropped_rows} (too few negatives in the corpus)",
        "precision": run.precision.name,
        "batch": f"effective {args.batch_size * args.gradient_accumulation_steps * world_size} (= {args.batch_size} x "
                 f"{args.gradient_accumulation_steps} accumulation x {world_size} process(es)); the labels fill "
                 f"global batches with {mean_rows:.1f} rows on average",
        "negatives": f"{negatives_per_query_in_batch(args.batch_size, world_size, examples.negatives_per_row, gather)}"
                     f" per query at most ({examples.negatives_per_row} hard, in-batch"
                     f"{' gathered across processes' if gather else ''}), {negatives:.1f} on average",
        "steps": f"{steps} optimizer steps, warm-up {args.warmup_steps:g}",
        "output": args.output_dir,
    })
    if 1 <= args.warmup_steps and args.warmup_steps >= steps:
        logger.warning("--warmup_steps %d covers all %d optimizer steps: the learning rate never reaches --lr %g",
                       args.warmup_steps, steps, args.lr)

    evaluator = DevRetrievalEvaluator(corpus, dev_queries, primary_metric=args.metric_for_best_model) \
        if dev_queries else None
    loss = MultipleNegativesRankingLoss(model, gather_across_devices=gather)
    trainer = EmbeddingTrainer(model=model, args=training_args, train_dataset=examples.dataset, loss=loss,
                               evaluator=evaluator, examples=examples,
                               callbacks=run.trainer_callbacks(has_dev=bool(dev_queries)))
    interrupted = run.train(trainer)
    if interrupted is not None:
        return interrupted

    # The Trainer has loaded the best checkpoint (load_best_model_at_end): it is the final model.
    history = dev_metrics_from_history(trainer.state.log_history, "eval_dev_")
    before = history[0][1] if history else {}
    # Final dev metrics on the main process only; under DDP the other ranks encode their share of it.
    with distributed_evaluation(model) as run_evaluator:
        after = evaluator(model, epoch=trainer.state.epoch, steps=trainer.state.global_step) \
            if evaluator and run_evaluator else {}
    after = {k.removeprefix("dev_"): v for k, v in after.items()}
    # The hybrid first stage (BM25 + this model): its dense weight is chosen on the dev queries and saved,
    # so that evaluate_rag.py fuses with the weight chosen here, never on its test set.
    fusion, hybrid = None, {}
    if dev_queries and is_main_process():
        stage = FirstStage(corpus, model, kind="hybrid")
        weight = stage.choose_dense_weight(dev_queries, max(DEFAULT_KS), args.metric_for_best_model)
        runs = stage.runs([q.query for q in dev_queries], max(DEFAULT_KS))
        hybrid = mean_metrics([query_metrics(ranking(run), q.relevant_ids, DEFAULT_KS, TRAINING_METRICS)
                               for run, q in zip(runs, dev_queries)])
        fusion = {"first_stage": "hybrid", "dense_weight": weight, "chosen_on": "dev",
                  "metric": args.metric_for_best_model, "dev_queries": len(dev_queries)}
    table = ""
    if after:  # the main process's (under DDP the other ranks only helped encode)
        columns = {"base": before, "fine-tuned": after}
        if hybrid:
            columns[f"hybrid (BM25 + fine-tuned, dense weight {fusion['dense_weight']:.1f})"] = hybrid
        table = (f"Dev metrics ({len(dev_queries)} held-out queries):\n"
                 + format_metrics_table(columns, TRAINING_METRICS, DEFAULT_KS))
        key = args.metric_for_best_model
        if after.get(key, 0.0) < before.get(key, 0.0):
            logger.warning("The fine-tuned model scores below the base model on dev %s (%.4f < %.4f): try a lower "
                           "--lr, fewer --freeze_layers or more data", key, after[key], before[key])
    code = run.finish(trainer, save=trainer.save_model, table=table, metrics={
        "dev_metrics": {"before": before, "after": after, **({"hybrid": hybrid} if hybrid else {})},
        "fusion": fusion,
        "train_queries": len(train_queries), "dev_queries": len(dev_queries),
        "train_examples": len(examples.dataset), "dropped_training_rows": examples.dropped_rows,
        "hard_negative_sources": candidates.sources if candidates else [],
    })
    logger.info("Saved the fine-tuned model to %s (load with SentenceTransformer(%r))", args.output_dir,
                args.output_dir)
    return code


if __name__ == "__main__":
    run_main(main)

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

from ragtune.train.arguments import (add_data_args, add_negative_args, add_output_args, add_training_args,
                                     validate_reranker_args, validate_training_args)
from ragtune.core.cli import new_parser
from ragtune.audit import add_audit_args
from ragtune.core.data import count_pairs, load_corpus, load_queries, split_queries
from ragtune.core.errors import run_main
from ragtune.core.metrics import DEFAULT_KS, TRAINING_METRICS
from ragtune.train.runner import TrainingRun
from ragtune.train.outputs import dev_metrics_from_history, format_metrics_table
from ragtune.train.training_args import total_optimizer_steps
from ragtune.train.distributed import is_main_process

logger = logging.getLogger("fine_tune_reranker")


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
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
    add_audit_args(parser)
    add_training_args(parser, epochs=4, batch_size=3, lr=2e-5, warmup_steps=0.1, max_seq_length=512,
                      evaluation_steps=10, checkpoint_save_steps=20, gradient_accumulation_steps=8)
    # Ranks 1-30: the reranker's job is to order the first stage's top candidates, so it learns from them.
    add_negative_args(parser, num_hard_negatives=2, rank_range=(1, 30), num_random_negatives=1)
    return parser


def main(argv: Sequence[str] | None = None, callbacks: Sequence = ()) -> int:
    """Run the script; ``callbacks`` are extra TrainerCallbacks (tests and benchmarks observe training)."""
    args = build_parser().parse_args(argv)
    run = TrainingRun(args, output_suffix="reranker", callbacks=callbacks)
    validate_training_args(args, min_batch_size=1)
    validate_reranker_args(args)

    # Data: everything is checked before anything is written.
    corpus = load_corpus(args.corpus)
    queries = load_queries(args.train_data, corpus)
    train_queries, dev_queries = split_queries(queries, args.dev_ratio, args.seed)
    corpus, train_queries, dev_queries = run.audit(corpus, train_queries, dev_queries)

    # Heavy imports after the cheap checks, so a typo fails in a second.
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    from ragtune.core.models import load_or_explain
    from ragtune.train.reranker.modeling import load_reranker
    from ragtune.train.reranker.evaluator import DevRerankingEvaluator, append_dev_metrics_to_card
    from ragtune.train.reranker.trainer import RerankerTrainer
    from ragtune.train.reranker.examples import (build_reranker_examples, clamp_negative_counts, mine_and_retrieve,
                                                 pair_lengths)

    num_hard, num_random = clamp_negative_counts(train_queries, corpus, args.num_hard_negatives,
                                                 args.num_random_negatives)
    training_args = run.training_arguments(CrossEncoderTrainingArguments, has_dev=bool(dev_queries),
                                           dataloader_pin_memory=torch.cuda.is_available())
    # Models: loaded and checked before the output dir is touched. Each process loads onto its own device
    # (not all onto the first GPU); weights stay fp32.
    device = str(training_args.device)
    embedding_model = None
    if args.embedding_model:
        embedding_model = load_or_explain(SentenceTransformer, args.embedding_model, "--embedding_model",
                                          device=device)
    model = load_reranker(args.base_model, args.max_seq_length, device=device)

    # Hard negatives and the dev first stage: one index of the corpus, on the main process, shared.
    mined = run.share(lambda: mine_and_retrieve(
        train_queries, dev_queries, corpus, embedding_model, args.hard_negative_source,
        tuple(args.hard_negative_range), num_hard, args.rerank_top_n, first_stage=args.first_stage))
    embedding_model = None  # not needed while training: give its memory back
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    examples = build_reranker_examples(train_queries, corpus, mined.candidates, num_hard, num_random, args.seed)

    steps = total_optimizer_steps(len(examples.dataset), args.batch_size, args.gradient_accumulation_steps,
                                  args.epochs, run.world_size, args.max_steps)
    run.log_summary("Fine-tuning the reranker", {
        "model": f"{args.base_model} on {training_args.device}, max_seq_length {model.max_seq_length}",
        "data": f"corpus {corpus.source} ({len(corpus)} passages), queries {args.train_data} ({len(queries)}, "
                f"{count_pairs(queries)} pairs)",
        "split": f"train {len(train_queries)} queries / {len(examples.dataset)} examples ({examples.num_positives} "
                 f"positives, {examples.num_negatives} negatives), dev {len(dev_queries)} queries",
        "negatives": f"per positive {num_hard} hard from {'+'.join(mined.sources) or 'uniform sampling'} ranks "
                     f"{args.hard_negative_range[0]}-{args.hard_negative_range[1]} and {num_random} random"
                     + (f"; {examples.hard_filled_randomly} hard slot(s) filled with uniform negatives (too few "
                        f"mined candidates)" if examples.hard_filled_randomly else ""),
        "loss": f"binary cross-entropy, pos_weight {examples.pos_weight:.2f}",
        "precision": run.precision.name,
        "batch": f"effective {args.batch_size * args.gradient_accumulation_steps * run.world_size} (= "
                 f"{args.batch_size} x {args.gradient_accumulation_steps} accumulation x {run.world_size} "
                 f"process(es))",
        "steps": f"{steps} optimizer steps, warm-up {args.warmup_steps:g}",
        "output": args.output_dir,
    })
    if 1 <= args.warmup_steps and args.warmup_steps >= steps:
        logger.warning("--warmup_steps %d covers all %d optimizer steps: the learning rate never reaches --lr %g",
                       args.warmup_steps, steps, args.lr)

    evaluator = None
    if dev_queries:
        evaluator = DevRerankingEvaluator(corpus, dev_queries, mined.dev_candidates,
                                          batch_size=training_args.per_device_eval_batch_size,
                                          primary_metric=args.metric_for_best_model,
                                          first_stage_scores=mined.dev_scores)
        logger.info("Dev: reranking the top %d of %s; %.1f%% of the relevant passages are among them (the ceiling "
                    "for recall)", args.rerank_top_n, mined.first_stage, 100 * evaluator.candidate_recall)
    loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(examples.pos_weight))
    trainer = RerankerTrainer(model=model, args=training_args, train_dataset=examples.dataset, loss=loss,
                              evaluator=evaluator, lengths=pair_lengths(model, examples.dataset),
                              callbacks=run.trainer_callbacks(has_dev=bool(dev_queries)))
    interrupted = run.train(trainer)
    if interrupted is not None:
        return interrupted

    # The Trainer has loaded the best checkpoint (load_best_model_at_end): it is the final model.
    history = dev_metrics_from_history(trainer.state.log_history, "eval_dev_")
    first_stage = evaluator.first_stage_metrics if evaluator else {}
    before = history[0][1] if history else {}
    after = evaluator(model, epoch=trainer.state.epoch, steps=trainer.state.global_step) if evaluator else {}
    after = {k.removeprefix("dev_"): v for k, v in after.items()}
    # Reranker fusion: the final score mixes the reranker's and the first stage's (normalised), with the
    # weight chosen on dev and saved, so that evaluate_rag.py uses it; weight 1 is the reranker alone.
    fusion, fused = None, {}
    if evaluator and is_main_process():
        reranker_weight, fused = evaluator.fusion_on_dev(model, args.metric_for_best_model)
        fusion = {"first_stage": mined.first_stage, "dense_weight": mined.dense_weight,
                  "reranker_weight": reranker_weight, "chosen_on": "dev", "metric": args.metric_for_best_model,
                  "dev_queries": len(dev_queries)}
    table = ""
    if evaluator:
        columns = {f"first stage ({mined.first_stage})": first_stage, "base reranker": before, "fine-tuned": after}
        if fused:
            columns[f"fused (reranker weight {fusion['reranker_weight']:.1f})"] = fused
        table = format_metrics_table(columns, TRAINING_METRICS, DEFAULT_KS)

    def save(output_dir: str) -> None:
        trainer.save_model(output_dir)
        if evaluator:
            append_dev_metrics_to_card(output_dir, table, (
                f"{len(dev_queries)} held-out queries; the reranker reorders the top {args.rerank_top_n} passages "
                f"of {mined.first_stage} (base model: {args.base_model}). Binary relevance, trec_eval definitions."))

    if table:
        table = (f"Dev metrics ({len(dev_queries)} held-out queries, top {args.rerank_top_n} of {mined.first_stage} "
                 f"reranked):\n{table}")
    code = run.finish(trainer, save=save, table=table, metrics={
        "first_stage": mined.first_stage,
        "dev_metrics": {"first_stage": first_stage, "before": before, "after": after,
                        **({"fused": fused} if fused else {})},
        "fusion": fusion,
        "dev_candidate_recall": evaluator.candidate_recall if evaluator else None,
        "train_queries": len(train_queries), "dev_queries": len(dev_queries),
        "train_examples": len(examples.dataset), "train_positives": examples.num_positives,
        "hard_negatives_per_positive": num_hard, "random_negatives_per_positive": num_random,
        "pos_weight": examples.pos_weight, "hard_negative_sources": mined.sources,
    })
    logger.info("Saved the fine-tuned reranker to %s (load with CrossEncoder(%r))", args.output_dir, args.output_dir)
    return code


if __name__ == "__main__":
    run_main(main)

#!/usr/bin/env python
r"""Fine-tune the answer generator of a RAG system (Qwen2.5 / Qwen3 chat models) with LoRA or QLoRA.

    python fine_tune_generator.py --base_model Qwen/Qwen2.5-1.5B-Instruct --epochs 3 --batch_size 2 \
        --gradient_accumulation_steps 8 --lr 2e-4 --lora_r 16 --lora_alpha 32 --lora_target all-linear \
        --max_seq_length 2048 --evaluation_steps 20 --checkpoint_save_steps 40 --resume_from_checkpoint auto

Each example is the system prompt, the contexts (labelled passages + --num_distractors retrieved
non-relevant ones, shuffled) and the question, with the reference answer as the target; or your chat
JSONL {"messages"} / instruction JSONL {"instruction", "input", "output"}. The loss is on the answer
and the end-of-turn token only; too-long examples lose context, never question or answer. Dev
metrics are computed on generated answers (greedy): ROUGE-L, BLEU-4, string presence, before, during
and after training; the best adapter by --metric_for_best_model is the final one. Load it with
PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), OUTPUT_DIR).

Trainer: the transformers Trainer, not TRL's SFTTrainer (see ragtune/generator/evaluation.py for why).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from ragtune.train.arguments import validate_training_args
from ragtune.core.errors import run_main
from ragtune.train.generator.arguments import build_parser as _build_parser
from ragtune.train.generator.arguments import validate_generator_args
from ragtune.core.answer_metrics import REFERENCE_ANSWER_METRICS
from ragtune.train.runner import TrainingRun
from ragtune.train.outputs import dev_metrics_from_history
from ragtune.train.training_args import total_optimizer_steps

logger = logging.getLogger("fine_tune_generator")


def build_parser():
    return _build_parser(__doc__)


def main(argv: Sequence[str] | None = None, callbacks: Sequence = ()) -> int:
    """Run the script; ``callbacks`` are extra TrainerCallbacks (tests and benchmarks observe training)."""
    args = build_parser().parse_args(argv)
    run = TrainingRun(args, output_suffix="generator", metric_prefix="eval_", callbacks=callbacks)
    validate_training_args(args, min_batch_size=1, valid_metrics=REFERENCE_ANSWER_METRICS)
    validate_generator_args(args)
    if args.qlora:
        args.gradient_checkpointing = True  # QLoRA's recipe: 4-bit bases are for small GPUs

    # Heavy imports after the cheap checks, so a typo fails in a second.
    import torch
    from transformers import DataCollatorForSeq2Seq, TrainingArguments

    from ragtune.train.generator.data import load_generator_data
    from ragtune.train.generator.evaluation import DevAnswerEvaluator, GeneratorTrainer
    from ragtune.generation.inference import generation_config_for, load_tokenizer
    from ragtune.train.generator.lora import add_lora, count_parameters, load_base_for_training
    from ragtune.train.generator.memory import ModelShape, estimate_memory
    from ragtune.train.generator.outputs import metrics_table, write_adapter_card
    from ragtune.train.generator.tokenize import ExampleTokenizer, show_trained_part, to_dataset, tokenize_examples
    from ragtune.generation.chat import end_of_turn_ids
    from ragtune.core.models import load_or_explain

    # Data: everything is checked before anything is written. Every rank builds the same (seeded) examples.
    embedding_model = None
    if args.embedding_model:
        from sentence_transformers import SentenceTransformer

        embedding_model = load_or_explain(SentenceTransformer, args.embedding_model, "--embedding_model")
    data = load_generator_data(args.train_data, args.corpus, args.dev_ratio, args.seed, args.num_distractors,
                               args.system_prompt or None, args.unanswerable_ratio, args.unanswerable_answer,
                               embedding_model, audit=run.audit)
    embedding_model = None
    has_dev = bool(data.dev)
    training_args = run.training_arguments(
        TrainingArguments, has_dev=has_dev, per_device_eval_batch_size=args.batch_size, label_names=["labels"],
        remove_unused_columns=False,
        # prepare_model_for_kbit_training turns checkpointing on for a 4-bit base itself
        **({"activation_checkpointing": False, "activation_checkpointing_kwargs": None} if args.qlora else {}))

    # Model: tokenizer and chat template, the base, the examples' tokens, the adapter; all checked here.
    tokenizer = load_tokenizer(args.base_model, "--base_model", args.chat_template)
    model = load_base_for_training(args.base_model, run.precision.name, args.qlora, str(training_args.device))
    example_tokenizer = ExampleTokenizer(tokenizer, args.max_seq_length,
                                         end_of_turn_ids(tokenizer, model.generation_config))
    train_tokens, train_cut = tokenize_examples(data.train, example_tokenizer)
    dev_tokens, dev_cut = tokenize_examples(data.dev, example_tokenizer)
    model = add_lora(model, args.lora_r, args.lora_alpha, args.lora_dropout, args.lora_target, args.qlora,
                     args.gradient_checkpointing, args.seed)
    counts = count_parameters(model)

    evaluator = None
    if has_dev:
        generated = dev_tokens[:args.max_dev_generations]
        evaluator = DevAnswerEvaluator(tokenizer, [t.prompt_ids for t in generated],
                                       [e.answer for e in data.dev[:len(generated)]], args.max_new_tokens,
                                       args.generation_batch_size)
    steps = total_optimizer_steps(len(train_tokens), args.batch_size, args.gradient_accumulation_steps,
                                  args.epochs, run.world_size, args.max_steps)
    # Batches are padded to their longest example: the longest one sets the peak, not --max_seq_length.
    longest = max(len(t.input_ids) for t in train_tokens + dev_tokens)
    memory = estimate_memory(
        ModelShape.from_config(model.get_base_model().config, params=counts.total - counts.trainable),
        lora_r=args.lora_r, batch_size=args.batch_size, seq_length=longest, qlora=args.qlora,
        gradient_checkpointing=args.gradient_checkpointing, lora_params=counts.trainable)
    run.log_summary("Fine-tuning the generator", {
        "model": f"{args.base_model}{' (4-bit NF4, double quantisation)' if args.qlora else ''} on "
                 f"{training_args.device}, {counts.total / 1e6:.1f}M parameters",
        "LoRA": f"r {args.lora_r}, alpha {args.lora_alpha}, dropout {args.lora_dropout:g}, targets "
                f"{' '.join(args.lora_target)}: {counts.trainable / 1e6:.2f}M trainable = {100 * counts.share:.3f}%",
        "data": data.description,
        "split": f"train {len(train_tokens)} examples ({sum(e.unanswerable for e in data.train)} unanswerable), "
                 f"dev {len(dev_tokens)}",
        "truncated": f"{train_cut} train / {dev_cut} dev example(s) longer than --max_seq_length "
                     f"{args.max_seq_length}: contexts shortened",
        "dev answers": (f"{len(evaluator)} generated per evaluation (greedy, <= {args.max_new_tokens} new tokens), "
                        f"best adapter by {run.metric_key}") if evaluator else "none (--dev_ratio 0)",
        "precision": run.precision.name,
        "batch": f"effective {args.batch_size * args.gradient_accumulation_steps * run.world_size} (= "
                 f"{args.batch_size} x {args.gradient_accumulation_steps} accumulation x {run.world_size} "
                 f"process(es))",
        "steps": f"{steps} optimizer steps, lr {args.lr:g}, warm-up {args.warmup_steps:g}",
        "GPU memory (est.)": f"weights {memory['weights']:.2f} GiB, LoRA state {memory['lora_state']:.2f} GiB, "
                             f"activations {memory['activations']:.2f} GiB (batch {args.batch_size} x "
                             f"{longest} tokens, the longest example"
                             f"{', checkpointed' if args.gradient_checkpointing else ''}), total ~"
                             f"{memory['total']:.1f} GiB per process",
        "output": args.output_dir,
    })
    if torch.cuda.is_available():
        gpu_gib = torch.cuda.get_device_properties(training_args.device).total_memory / 1024 ** 3
        if memory["total"] > gpu_gib:
            logger.warning("The estimate (~%.1f GiB) exceeds this GPU's %.1f GiB: consider --gradient_checkpointing, "
                           "a smaller --batch_size (with more --gradient_accumulation_steps) or --qlora",
                           memory["total"], gpu_gib)
    logger.info("One training example (the trained part between >>> and <<<):\n%s",
                show_trained_part(tokenizer, train_tokens[0]))

    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100,
                                      pad_to_multiple_of=8 if torch.cuda.is_available() else None)
    trainer = GeneratorTrainer(model=model, args=training_args, train_dataset=to_dataset(train_tokens),
                               eval_dataset=to_dataset(dev_tokens) if has_dev else None, data_collator=collator,
                               processing_class=tokenizer, answer_evaluator=evaluator,
                               callbacks=run.trainer_callbacks(has_dev=has_dev))
    interrupted = run.train(trainer)
    if interrupted is not None:
        return interrupted

    # The Trainer has loaded the best adapter (load_best_model_at_end): it is the final one.
    history = dev_metrics_from_history(trainer.state.log_history, "eval_")
    before = {k: v for k, v in history[0][1].items() if k in (*REFERENCE_ANSWER_METRICS, "loss")} if history else {}
    after = {}
    if evaluator and len(evaluator):
        best_step = int(Path(trainer.state.best_model_checkpoint).name.split("-")[-1]) if (
            trainer.state.best_model_checkpoint) else None
        if history and best_step == history[-1][0] == trainer.state.global_step:
            after = {k: v for k, v in history[-1][1].items() if k in (*REFERENCE_ANSWER_METRICS, "loss")}  # just computed
        else:
            after = evaluator(model)
    metrics = {
        "dev_metrics": {"before": before, "after": after},
        "train_examples": len(train_tokens), "dev_examples": len(dev_tokens), "dev_generated": len(evaluator or []),
        "truncated_examples": {"train": train_cut, "dev": dev_cut}, "data_format": data.kind,
        "parameters": {"total": counts.total, "trainable": counts.trainable, "trainable_share": counts.share},
        "qlora": args.qlora, "estimated_gpu_memory_gib": memory,
        "dev_answers": [{"reference": r, "answer": a} for r, a in zip(evaluator.references, evaluator.last_answers)]
        if evaluator else [],
    }

    def save(output_dir: str) -> None:
        trainer.save_model(output_dir)  # the adapter and the tokenizer (with its chat template)
        generation_config_for(model, tokenizer, args.max_new_tokens).save_pretrained(output_dir)
        write_adapter_card(output_dir, args.base_model, before, after, len(evaluator or []), vars(args))
        if args.merge:
            from ragtune.train.generator.merge import merge_adapter

            check = [t.prompt_ids for t in (dev_tokens or train_tokens)[:4]]
            metrics["merged"] = merge_adapter(args.base_model, output_dir, f"{output_dir}/merged", tokenizer, check,
                                              min(args.max_new_tokens, 32))

    table = (f"Dev answer metrics ({len(evaluator)} held-out queries, greedy):\n{metrics_table(before, after)}"
             if evaluator and len(evaluator) else "")
    code = run.finish(trainer, save=save, metrics=metrics, table=table, curve_metrics=REFERENCE_ANSWER_METRICS)
    if after and after.get(args.metric_for_best_model, 0.0) <= before.get(args.metric_for_best_model, 0.0):
        logger.warning("The fine-tuned adapter is not above the base model on dev %s (%.4f vs %.4f)",
                       args.metric_for_best_model, after[args.metric_for_best_model],
                       before.get(args.metric_for_best_model, 0.0))
    logger.info("Saved the LoRA adapter to %s: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(%r), "
                "%r)", args.output_dir, args.base_model, args.output_dir)
    return code


if __name__ == "__main__":
    run_main(main)

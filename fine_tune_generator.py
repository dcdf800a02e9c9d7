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

Trainer: the transformers Trainer, not TRL's SFTTrainer (see ragtune/train/generator/trainer.py for why).
"""

from __future__ import annotations

import argparse
import logging
from typing import Sequence

from ragtune.core.answer_metrics import REFERENCE_ANSWER_METRICS
from ragtune.core.errors import run_main
from ragtune.core.io import setup_logging
from ragtune.generation.chat import end_of_turn_ids
from ragtune.generation.prompt import write_prompt_settings
from ragtune.retrieval.encoding import load_embedding_model
from ragtune.train.distributed import local_rank_is_main
from ragtune.train.generator.arguments import OUTPUT_SUFFIX, validate_args
from ragtune.train.generator.arguments import build_parser as kind_parser
from ragtune.train.generator.data import load_generator_data
from ragtune.train.generator.memory import estimate_run_memory, warn_if_over_gpu
from ragtune.train.generator.tokenize import ExampleTokenizer, show_trained_part, to_dataset, tokenize_examples
from ragtune.train.next_steps import after_generator, log_next_commands

logger = logging.getLogger("fine_tune_generator")


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
    from transformers import DataCollatorForSeq2Seq, TrainingArguments

    from ragtune.generation.inference import base_load_code, generation_config_for, load_tokenizer
    from ragtune.train.generator.evaluator import KeepAnswersByStep, base_and_final_dev_metrics, dev_evaluator
    from ragtune.train.generator.lora import (
        add_lora,
        count_parameters,
        load_base_for_training,
        warn_if_adapter_unchanged,
    )
    from ragtune.train.generator.merge import merge_adapter
    from ragtune.train.generator.outputs import describe_run, dev_example_rows, metrics_table, write_adapter_card
    from ragtune.train.generator.trainer import GeneratorTrainer
    from ragtune.train.runner import TrainingRun
    from ragtune.train.training_args import total_optimizer_steps

    run = TrainingRun(args, model_kind="adapter", output_suffix=OUTPUT_SUFFIX, metric_prefix="eval_",
                      callbacks=callbacks)

    # Data: everything is checked before anything is written. Every rank builds the same (seeded) examples.
    data = load_generator_data(args.train_data, args.corpus, args.dev_ratio, args.seed, args.num_distractors,
                               args.system_prompt or None, args.unanswerable_ratio, args.unanswerable_answer,
                               load_embedding_model(args.embedding_model), audit=run.audit,
                               expander=run.first_stage_expander(args.embedding_model))
    run.dev_rows = dev_example_rows(data.dev)
    has_dev = bool(data.dev)
    plan = run.plan(
        TrainingArguments, has_dev=has_dev, per_device_eval_batch_size=args.batch_size, label_names=["labels"],
        remove_unused_columns=False,
        # prepare_model_for_kbit_training turns checkpointing on for a 4-bit base itself
        **({"activation_checkpointing": False, "activation_checkpointing_kwargs": None} if args.qlora else {}))

    # Model: tokenizer and chat template, the base, the examples' tokens, the adapter; all checked here.
    tokenizer = load_tokenizer(args.base_model, "--base_model", args.chat_template)
    model = load_base_for_training(args.base_model, plan.precision.name, args.qlora, str(plan.device))
    example_tokenizer = ExampleTokenizer(tokenizer, args.max_seq_length,
                                         end_of_turn_ids(tokenizer, model.generation_config))
    train_tokens, train_cut = tokenize_examples(data.train, example_tokenizer)
    dev_tokens, dev_cut = tokenize_examples(data.dev, example_tokenizer)
    model = add_lora(model, args.lora_r, args.lora_alpha, args.lora_dropout, args.lora_target, args.qlora,
                     args.gradient_checkpointing, args.seed)
    counts = count_parameters(model)
    evaluator = dev_evaluator(tokenizer, dev_tokens, data.dev, args, run.interrupt.stop_requested) if has_dev else None
    longest = max(len(t.input_ids) for t in train_tokens + dev_tokens)
    memory = estimate_run_memory(model, counts, args, longest)
    steps = total_optimizer_steps(len(train_tokens), args.batch_size, args.gradient_accumulation_steps,
                                  args.epochs, plan.world_size, args.max_steps)
    run.log_summary("Fine-tuning the generator", plan, steps=steps, **describe_run(
        args, data, counts, (len(train_tokens), train_cut), (len(dev_tokens), dev_cut), evaluator, memory,
        longest, run.metric_key))
    warn_if_over_gpu(memory, plan.device)
    log_training_example(show_trained_part(tokenizer, train_tokens[0]), args.verbose)

    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100,
                                      pad_to_multiple_of=8 if torch.cuda.is_available() else None)
    trainer = GeneratorTrainer(model=model, args=plan.arguments, train_dataset=to_dataset(train_tokens),
                               eval_dataset=to_dataset(dev_tokens) if has_dev else None, data_collator=collator,
                               processing_class=tokenizer, answer_evaluator=evaluator,
                               callbacks=[*run.trainer_callbacks(has_dev=has_dev),
                                          *([KeepAnswersByStep(evaluator)] if evaluator else [])])
    interrupted = run.train(trainer, plan)
    if interrupted is not None:
        return interrupted
    warn_if_adapter_unchanged(trainer.model)

    # The Trainer has loaded the best adapter (load_best_model_at_end): it is the final one.
    before, after = base_and_final_dev_metrics(trainer, evaluator, model)
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
        write_prompt_settings(output_dir, args.system_prompt)
        write_adapter_card(output_dir, args.base_model, before, after, len(evaluator or []), vars(args))
        if args.merge:
            check = [t.prompt_ids for t in (dev_tokens or train_tokens)[:4]]
            metrics["merged"] = merge_adapter(args.base_model, output_dir, f"{output_dir}/merged", tokenizer, check,
                                              min(args.max_new_tokens, 32))

    table = (f"Dev answer metrics ({len(evaluator)} held-out queries, greedy):\n{metrics_table(before, after)}"
             if evaluator and len(evaluator) else "")
    code = run.finish(trainer, plan, save=save, metrics=metrics, table=table, curve_metrics=REFERENCE_ANSWER_METRICS)
    logger.info("Saved the LoRA adapter to %s: PeftModel.from_pretrained(%s, %r)", args.output_dir,
                base_load_code(args.base_model), args.output_dir)
    log_next_commands(after_generator(args))
    return code


def log_training_example(example: str, verbose: bool) -> None:
    """One training example with its trained part marked: the whole prompt with --verbose, else one line with the
    prompt's last words (where the answer starts) and the trained part."""
    if verbose:
        logger.info("One training example (the trained part between >>> and <<<):\n%s", example)
        return
    prompt, marker, trained = example.partition(">>>")
    logger.info("One training example's trained part between >>> and <<< (--verbose shows the whole prompt): "
                "...%s%s%s", " ".join(prompt.split())[-40:], marker, " ".join(trained.split()))


if __name__ == "__main__":
    run_main(main)

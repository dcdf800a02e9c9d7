"""fine_tune_generator.py's flags and the checks that need no model."""

from __future__ import annotations

import argparse
from pathlib import Path

from ragtune.core.answer_metrics import REFERENCE_ANSWER_METRICS
from ragtune.core.errors import UserError
from ragtune.core.model_specs import is_gguf
from ragtune.generation.prompt import DEFAULT_SYSTEM_PROMPT, DEFAULT_UNANSWERABLE_ANSWER
from ragtune.train.arguments import add_run_args, new_training_parser, validate_training_args

# The default --output_dir is outputs/<base model name>-generator (ragtune.train.arguments.default_output_dir).
OUTPUT_SUFFIX = "generator"

DEFAULT_BASE_MODEL = "Qwen/Qwen2.5-1.5B-Instruct"


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The generator script's flags, with the template command's values as defaults."""
    parser, model = new_training_parser(description, base_model=DEFAULT_BASE_MODEL, base_model_help=(
        "Chat model to fine-tune (Qwen2.5 / Qwen3 instruct, 0.5B-14B): a Hub id, a local folder, or a "
        ".gguf file (loaded through transformers' GGUF support, dequantised)."))
    model.add_argument("--chat_template", default=None, metavar="FILE",
                       help="Jinja chat template for a model that has none (or to replace its own).")
    model.add_argument("--system_prompt", default=DEFAULT_SYSTEM_PROMPT,
                       help="System prompt of every RAG example (and of evaluate_rag.py's generator); '' for none.")
    model.add_argument("--unanswerable_answer", default=DEFAULT_UNANSWERABLE_ANSWER,
                       help="Target answer of the --unanswerable_ratio examples (keep it in line with the system "
                            "prompt).")
    model.add_argument("--embedding_model", default=None,
                       help="Optional embedding model (e.g. fine_tune_bge_m3.py's output) that retrieves the "
                            "distractor passages instead of BM25.")
    data = parser.add_argument_group("RAG examples (query files + corpus)")
    data.add_argument("--num_distractors", type=int, default=2,
                      help="Retrieved non-relevant passages shown with the labelled ones, shuffled, so the model "
                           "learns to find the answer among noise.")
    data.add_argument("--unanswerable_ratio", type=float, default=0.0,
                      help="Add this share (of the training queries) of examples with distractors only, whose "
                           "target is --unanswerable_answer.")
    lora = parser.add_argument_group("LoRA / QLoRA")
    lora.add_argument("--lora_r", type=int, default=16, help="LoRA rank.")
    lora.add_argument("--lora_alpha", type=int, default=32, help="LoRA scaling numerator (scale = alpha / r).")
    lora.add_argument("--lora_dropout", type=float, default=0.05, help="Dropout on the LoRA input.")
    lora.add_argument("--lora_target", nargs="+", default=["all-linear"], metavar="MODULE",
                      help="all-linear (every linear layer but the output head) or module names, e.g. "
                           "q_proj k_proj v_proj o_proj.")
    lora.add_argument("--qlora", action="store_true",
                      help="Load the base in 4-bit NF4 with double quantisation (bitsandbytes, CUDA GPU only); "
                           "turns on gradient checkpointing.")
    lora.add_argument("--merge", action="store_true",
                      help="Also write merged/: the adapter merged into a 16-bit base (never into a 4-bit one), "
                           "checked to give the adapter's greedy answers.")
    evaluation = parser.add_argument_group("dev answers")
    evaluation.add_argument("--max_new_tokens", type=int, default=256,
                            help="Longest generated dev answer (greedy decoding).")
    evaluation.add_argument("--max_dev_generations", type=int, default=100,
                            help="Dev queries whose answers are generated at each evaluation (eval_loss uses all).")
    evaluation.add_argument("--generation_batch_size", type=int, default=8, help="Prompts generated at once.")
    add_run_args(parser, epochs=3, batch_size=2, lr=2e-4, warmup_steps=0.03, max_seq_length=2048,
                 evaluation_steps=20, checkpoint_save_steps=40, gradient_accumulation_steps=8,
                 metric_for_best_model="rouge_l", metric_choices=REFERENCE_ANSWER_METRICS,
                 # On by default here: at the template's 2 x 2048 tokens a 1.5B model's activations and
                 # 152k-vocabulary logits need ~17 GiB without it (ragtune/train/generator/memory.py).
                 gradient_checkpointing=True)
    return parser


def validate_args(args: argparse.Namespace) -> None:
    """Every check of the generator script's flags; raise UserError naming the flag.

    ``--qlora`` turns gradient checkpointing on (QLoRA's recipe: 4-bit bases are for small GPUs).
    """
    validate_training_args(args, min_batch_size=1, valid_metrics=REFERENCE_ANSWER_METRICS)
    checks = [
        (args.lora_r >= 1, f"--lora_r must be at least 1, got {args.lora_r}"),
        (args.lora_alpha > 0, f"--lora_alpha must be positive, got {args.lora_alpha}"),
        (0.0 <= args.lora_dropout < 1.0, f"--lora_dropout must be in [0, 1), got {args.lora_dropout}"),
        (args.num_distractors >= 0, f"--num_distractors must be >= 0, got {args.num_distractors}"),
        (0.0 <= args.unanswerable_ratio <= 1.0, f"--unanswerable_ratio must be in [0, 1], got {args.unanswerable_ratio}"),
        (args.max_new_tokens >= 1, f"--max_new_tokens must be at least 1, got {args.max_new_tokens}"),
        (args.max_dev_generations >= 1, f"--max_dev_generations must be at least 1 (dev metrics and the best adapter "
                                        f"come from generated answers), got {args.max_dev_generations}"),
        (args.generation_batch_size >= 1,
         f"--generation_batch_size must be at least 1, got {args.generation_batch_size}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    if args.chat_template:
        if not Path(args.chat_template).is_file():
            raise UserError(f"--chat_template: file not found: {args.chat_template}")
    if args.qlora:
        if is_gguf(args.base_model):
            raise UserError("--qlora: a GGUF base is dequantised on loading and is not re-quantised to 4-bit here; "
                            "train LoRA on it without --qlora")
        check_qlora_available()
        args.gradient_checkpointing = True


def check_qlora_available() -> None:
    """--qlora needs a CUDA GPU and bitsandbytes; say so in one line before anything is loaded."""
    import torch

    if not torch.cuda.is_available():
        raise UserError("--qlora needs a CUDA GPU (bitsandbytes 4-bit); none found. Drop --qlora to train LoRA on "
                        "a 16/32-bit base instead")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise UserError("--qlora needs the bitsandbytes package: pip install bitsandbytes") from err

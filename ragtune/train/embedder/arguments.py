"""The embedding script's command line: its flags and their checks, in one place."""

from __future__ import annotations

import argparse

from ragtune.train.arguments import add_negative_args, add_run_args, new_training_parser, validate_training_args

# The default --output_dir is outputs/<base model name>-finetuned (ragtune.train.arguments.default_output_dir).
OUTPUT_SUFFIX = "finetuned"


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The embedding script's flags, with the template command's values as defaults."""
    parser, model = new_training_parser(description, base_model="BAAI/bge-m3", base_model_help=(
        "Model to start from: a sentence-transformers model or a plain Hugging Face encoder, as a Hub "
        "id or a local folder."))
    model.add_argument("--freeze_layers", type=int, default=4,
                       help="Freeze the embeddings and the bottom N encoder layers (0 trains everything).")
    model.add_argument("--query_prompt", default=None,
                       help="Text put before every query, e.g. 'query: ' for E5 models. Saved in the model so that "
                            "encode_query applies it. Default: the model's own (none for bge-m3).")
    model.add_argument("--passage_prompt", default=None,
                       help="Text put before every passage, e.g. 'passage: '. Saved in the model for "
                            "encode_document. Default: the model's own (none for bge-m3).")
    add_run_args(parser, epochs=5, batch_size=8, lr=1e-5, warmup_steps=100, max_seq_length=384,
                 evaluation_steps=15, checkpoint_save_steps=30)
    add_negative_args(parser, num_hard_negatives=1)
    parser.add_argument("--no_gather_across_devices", dest="gather_across_devices", action="store_false",
                        help="With several processes, do not share in-batch negatives across them.")
    return parser



def validate_args(args: argparse.Namespace) -> None:
    """Every check of the embedding script's flags; raise UserError naming the flag."""
    validate_training_args(args, min_batch_size=2)

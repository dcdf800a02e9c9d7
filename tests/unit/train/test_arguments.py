"""The fine-tuning scripts' shared flags and their checks: each bad flag is named in one clear error."""

from __future__ import annotations

import argparse

import pytest

from ragtune.core.errors import UserError
from ragtune.train.arguments import (
    add_data_args,
    add_negative_args,
    add_output_args,
    add_training_args,
    validate_negative_args,
    validate_training_args,
)


def _args(*argv: str, negatives: bool = True, freeze: bool = True) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_data_args(parser)
    add_output_args(parser, default_output_dir="out")
    add_training_args(parser, epochs=1, batch_size=2, lr=1e-5, warmup_steps=0, max_seq_length=64,
                      evaluation_steps=2, checkpoint_save_steps=2)
    if negatives:
        add_negative_args(parser, num_hard_negatives=1)
    if freeze:
        parser.add_argument("--freeze_layers", type=int, default=0)
    return parser.parse_args(list(argv))


def test_defaults_pass_and_each_bad_flag_is_named():
    validate_training_args(_args())
    for argv, message in [(["--freeze_layers", "-1"], "--freeze_layers must be >= 0"),
                          (["--num_hard_negatives", "-1"], "--num_hard_negatives must be >= 0"),
                          (["--hard_negative_range", "5", "2"], "--hard_negative_range")]:
        with pytest.raises(UserError, match=message):
            validate_training_args(_args(*argv))
    with pytest.raises(UserError, match="--hard_negative_range"):
        validate_negative_args(_args("--hard_negative_range", "0", "3"))


def test_a_script_without_negative_or_freeze_flags_gets_its_own_metrics(tmp_path):
    args = _args("--metric_for_best_model", "loss", negatives=False, freeze=False)
    validate_training_args(args, valid_metrics={"loss", "rougeL"})
    with pytest.raises(UserError, match="--metric_for_best_model must be one of loss, rougeL; got 'ndcg@5'"):
        validate_training_args(_args(negatives=False), valid_metrics={"loss", "rougeL"})
    with pytest.raises(UserError, match="--metric_for_best_model"):
        validate_training_args(args)  # the default: ranking metrics


def test_data_paths_name_a_directory_and_a_missing_file(tmp_path):
    with pytest.raises(UserError, match=f"--train_data: {tmp_path} is a directory, not a file"):
        validate_training_args(_args("--train_data", str(tmp_path)))
    with pytest.raises(UserError, match="--corpus: file not found"):
        validate_training_args(_args("--corpus", str(tmp_path / "nope.csv")))

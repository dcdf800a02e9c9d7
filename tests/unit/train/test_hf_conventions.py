"""Hugging Face flag conventions in the three fine-tuning scripts: the TrainingArguments names are aliases of the
template flags (one setting, two spellings), no abbreviation is taken for a flag, --report_to / --run_name /
--logging_steps / --save_only_model reach the TrainingArguments, and a weights-only checkpoint is refused for
resuming in one line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import TrainingArguments

from ragtune.core.errors import UserError
from ragtune.train import arguments as train_arguments
from ragtune.train.checkpoints import SAVED_ONLY_MODEL, checkpoint_problem, find_resumable_checkpoint, resolve_resume
from ragtune.train.embedder.arguments import build_parser as embedder_parser
from ragtune.train.generator.arguments import build_parser as generator_parser
from ragtune.train.reranker.arguments import build_parser as reranker_parser
from ragtune.train.training_args import Precision, trainer_kwargs

PARSERS = {"embedding": embedder_parser, "reranker": reranker_parser, "generator": generator_parser}

# (Hugging Face name, template flag, a value other than every script's default)
ALIASES = [
    ("--num_train_epochs", "--epochs", "7"),
    ("--learning_rate", "--lr", "3e-05"),
    ("--per_device_train_batch_size", "--batch_size", "5"),
    ("--eval_steps", "--evaluation_steps", "6"),
    ("--save_steps", "--checkpoint_save_steps", "12"),
    ("--model_name_or_path", "--base_model", "some/model"),
    ("--lr_scheduler_type", "--scheduler", "cosine"),
    ("--warmup_ratio", "--warmup_steps", "0.15"),
]


@pytest.mark.parametrize("script", PARSERS)
@pytest.mark.parametrize("alias, flag, value", ALIASES, ids=[a for a, _, _ in ALIASES])
def test_each_hugging_face_name_parses_to_the_template_flags_config(script, alias, flag, value):
    parser = PARSERS[script]()
    by_alias, by_flag = vars(parser.parse_args([alias, value])), vars(parser.parse_args([flag, value]))
    assert by_alias == by_flag
    assert by_alias != vars(parser.parse_args([]))  # the value took effect
    assert alias in parser.format_help()


def test_new_trainer_flags_default_to_todays_behaviour():
    args = embedder_parser().parse_args([])
    assert (args.report_to, args.run_name, args.logging_steps) == (["tensorboard"], None, None)
    assert (args.save_only_model, args.keep_checkpoints, args.verbose) == (False, True, False)
    assert embedder_parser().parse_args(["--no_keep_checkpoints"]).keep_checkpoints is False


def argparse_error(parser, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(argv)
    assert exit_info.value.code == 2
    output = capsys.readouterr().err.strip()
    assert len(output.splitlines()) == 1, output
    return output


@pytest.mark.parametrize("argv, says", [
    (["--lr", "1e-5", "--learning_rate", "2e-5"], "--lr and --learning_rate set the same thing"),
    (["--num_train_epochs", "3", "--epochs", "4"], "--num_train_epochs and --epochs set the same thing"),
    (["--warmup_steps", "100", "--warmup_ratio", "0.1"], "--warmup_steps and --warmup_ratio set the same thing"),
])
def test_one_setting_given_two_values_under_two_names_is_refused(argv, says, capsys):
    assert says in argparse_error(embedder_parser(), argv, capsys)


def test_the_same_value_under_both_names_and_a_repeated_name_are_accepted():
    parser = embedder_parser()
    assert parser.parse_args(["--lr", "2e-5", "--learning_rate", "0.00002"]).lr == 2e-5
    assert parser.parse_args(["--epochs", "2", "--epochs", "3"]).epochs == 3  # argparse's own rule: the last


def test_warmup_ratio_is_a_fraction_below_one(capsys):
    assert "argument --warmup_ratio: must be a fraction of all optimizer steps in [0, 1), got 1.5" in \
        argparse_error(reranker_parser(), ["--warmup_ratio", "1.5"], capsys)


@pytest.mark.parametrize("script", PARSERS)
def test_an_abbreviated_flag_is_refused_with_the_flag_it_looks_like(script, capsys):
    output = argparse_error(PARSERS[script](), ["--epoch", "3"], capsys)
    assert "unrecognized arguments: --epoch" in output and "did you mean --epochs?" in output


def test_every_ragtune_command_line_refuses_abbreviations(capsys):
    import evaluate_rag
    import predict_rag
    from ragtune import split
    from ragtune.audit import __main__ as audit_main

    for build, flag, meant in [(evaluate_rag.build_parser, "--embedding_model", "--embedding_models"),
                               (predict_rag.build_parser, "--top", None), (split.build_parser, "--test_rat", None),
                               (audit_main.build_parser, "--cor", None)]:
        parser = build()
        assert parser.allow_abbrev is False, build
        if meant:
            assert f"did you mean {meant}?" in argparse_error(parser, [flag, "x"], capsys)


def kwargs_for(*argv: str) -> dict:
    args = embedder_parser().parse_args(list(argv))
    return trainer_kwargs(args, Precision("fp32"), has_dev=True, metric_key="eval_dev_ndcg@5",
                          output_dir="out")


def test_report_to_run_name_logging_steps_and_save_only_model_reach_the_training_arguments(tmp_path):
    assert kwargs_for()["report_to"] == ["tensorboard"]  # today's behaviour: TensorBoard logs under runs/
    assert kwargs_for("--report_to", "none")["report_to"] == "none"
    assert kwargs_for("--logging_steps", "3")["logging_steps"] == 3
    assert kwargs_for()["logging_steps"] == 10  # every --evaluation_steps (15), at most 10
    kwargs = kwargs_for("--save_only_model", "--run_name", "first-try", "--report_to", "none")
    assert kwargs["save_only_model"] is True and kwargs["run_name"] == "first-try"
    arguments = TrainingArguments(**{**kwargs, "output_dir": str(tmp_path)})
    assert arguments.report_to == [] and arguments.save_only_model and arguments.run_name == "first-try"
    tensorboard = TrainingArguments(**{**kwargs_for(), "output_dir": str(tmp_path)})
    assert tensorboard.report_to == ["tensorboard"]


def test_report_to_needs_its_package_and_none_alone(monkeypatch):
    args = embedder_parser().parse_args(["--report_to", "none", "tensorboard"])
    with pytest.raises(UserError, match="--report_to none cannot be combined with tensorboard"):
        train_arguments.validate_report_to(args.report_to)
    installed = {"tensorboard"}
    monkeypatch.setattr(train_arguments.importlib.util, "find_spec",
                        lambda name: object() if name in installed else None)
    train_arguments.validate_report_to(["tensorboard"])
    train_arguments.validate_report_to(["none"])
    for tracker in ("wandb", "mlflow", "trackio"):
        with pytest.raises(UserError) as err:
            train_arguments.validate_report_to(["tensorboard", tracker])
        assert str(err.value) == (f"--report_to {tracker}: the {tracker} package is not installed (pip install "
                                  f"{tracker}), or pass --report_to none")


def weights_only_checkpoint(folder: Path) -> Path:
    """A checkpoint as the Trainer writes it with save_only_model: weights and trainer state, no optimizer."""
    folder.mkdir(parents=True)
    save_file({"w": torch.zeros(2, 2)}, str(folder / "model.safetensors"))
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": int(folder.name.split("-")[-1])}))
    return folder


def test_a_checkpoint_saved_with_save_only_model_is_not_resumable_and_says_why(tmp_path, caplog):
    checkpoint = weights_only_checkpoint(tmp_path / "checkpoint-4")
    weights_only_checkpoint(tmp_path / "checkpoint-8")
    assert checkpoint_problem(checkpoint) == SAVED_ONLY_MODEL
    with pytest.raises(UserError) as err:
        resolve_resume(str(checkpoint), tmp_path, overwrite_finished=False)
    message = str(err.value)
    assert "saved with --save_only_model" in message and "not resumable" in message and "\n" not in message
    with caplog.at_level(logging.WARNING):
        assert resolve_resume("auto", tmp_path, overwrite_finished=False) is None
    lines = [r.getMessage() for r in caplog.records if "checkpoint-" in r.getMessage()]
    assert lines == [f"Skipping checkpoint-8, checkpoint-4 in {tmp_path}: {SAVED_ONLY_MODEL}"]
    assert find_resumable_checkpoint(tmp_path, quiet=True) is None

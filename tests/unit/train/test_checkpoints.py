"""Checkpoints: --resume_from_checkpoint auto takes the newest complete one, where complete means that what the
Trainer loads (trainer state, optimizer, scheduler, weights) does load; a checkpoint trained with other
model-shaping flags is refused in one line."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ragtune.core.errors import UserError
from ragtune.train.callbacks import ModelSettingsCallback
from ragtune.train.checkpoints import (
    MODEL_SETTINGS_FILE,
    check_model_settings,
    checkpoint_problem,
    find_resumable_checkpoint,
    model_settings,
    resolve_resume,
)


def write_checkpoint(folder: Path, weights: str = "adapter_model.safetensors") -> Path:
    """A checkpoint as the Trainer leaves it: real (small) torch and safetensors files."""
    folder.mkdir(parents=True)
    tensor = torch.arange(64, dtype=torch.float32).reshape(8, 8)
    torch.save({"state": {0: {"exp_avg": tensor, "exp_avg_sq": tensor}}, "param_groups": [{"lr": 1e-3}]},
               folder / "optimizer.pt")
    torch.save({"last_epoch": 3, "_last_lr": [1e-3]}, folder / "scheduler.pt")
    save_file({"lora_B.weight": tensor}, str(folder / weights))
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": int(folder.name.split("-")[-1])}))
    return folder


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


FAULTS = {
    "truncated optimizer.pt": (lambda c: truncate(c / "optimizer.pt"), "optimizer.pt does not load"),
    "empty scheduler.pt": (lambda c: (c / "scheduler.pt").write_bytes(b""), "scheduler.pt does not load"),
    "missing weights": (lambda c: (c / "adapter_model.safetensors").unlink(), "no model weights"),
    "truncated weights": (lambda c: truncate(c / "adapter_model.safetensors"),
                          "adapter_model.safetensors is unreadable"),
    "missing optimizer.pt": (lambda c: (c / "optimizer.pt").unlink(), "no optimizer.pt"),
    "trainer state cut short": (lambda c: (c / "trainer_state.json").write_text('{"global_st'),
                                "trainer_state.json does not parse"),
    "index naming a missing shard": (
        lambda c: ((c / "adapter_model.safetensors").rename(c / "model-00001-of-00002.safetensors"),
                   (c / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
                       "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))),
        "names model-00002-of-00002.safetensors, which is missing"),
}


def test_a_checkpoint_as_the_trainer_writes_it_is_complete(tmp_path):
    for weights in ("adapter_model.safetensors", "model.safetensors"):
        assert checkpoint_problem(write_checkpoint(tmp_path / weights / "checkpoint-2", weights)) is None


def test_auto_resume_skips_a_half_written_checkpoint(tmp_path):
    write_checkpoint(tmp_path / "checkpoint-4")
    (tmp_path / "checkpoint-8").mkdir()
    (tmp_path / "checkpoint-8" / "model.safetensors").write_bytes(b"partial")
    assert find_resumable_checkpoint(tmp_path) == tmp_path / "checkpoint-4"


@pytest.mark.parametrize("fault", FAULTS)
def test_auto_resume_falls_back_past_a_broken_checkpoint_and_says_why(fault, tmp_path, caplog):
    break_it, reason = FAULTS[fault]
    write_checkpoint(tmp_path / "checkpoint-4")
    newest = write_checkpoint(tmp_path / "checkpoint-8")
    break_it(newest)
    with caplog.at_level(logging.WARNING):
        assert resolve_resume("auto", tmp_path, overwrite_finished=False) == str(tmp_path / "checkpoint-4")
    skipped = [r.getMessage() for r in caplog.records if "Skipping checkpoint" in r.getMessage()]
    assert len(skipped) == 1 and "checkpoint-8" in skipped[0] and reason in skipped[0], skipped


@pytest.mark.parametrize("fault", FAULTS)
def test_an_explicit_broken_checkpoint_is_a_user_error_naming_what_is_wrong(fault, tmp_path):
    break_it, reason = FAULTS[fault]
    checkpoint = write_checkpoint(tmp_path / "checkpoint-8")
    break_it(checkpoint)
    with pytest.raises(UserError, match="--resume_from_checkpoint") as err:
        resolve_resume(str(checkpoint), tmp_path, overwrite_finished=False)
    assert reason in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------- model-shaping settings


def generator_args(**changes) -> argparse.Namespace:
    values = {"base_model": "Qwen/Qwen2.5-1.5B-Instruct", "max_seq_length": 2048, "lora_r": 16, "lora_alpha": 32,
              "lora_target": ["all-linear"], "qlora": False, "lr": 2e-4, "epochs": 3}
    return argparse.Namespace(**{**values, **changes})


def test_the_settings_recorded_are_the_model_shaping_flags_the_script_has():
    assert model_settings(generator_args()) == {"base_model": "Qwen/Qwen2.5-1.5B-Instruct", "max_seq_length": 2048,
                                                "lora_r": 16, "lora_alpha": 32, "lora_target": ["all-linear"],
                                                "qlora": False}
    embedder = argparse.Namespace(base_model="BAAI/bge-m3", max_seq_length=384, freeze_layers=4, lr=1e-5)
    assert model_settings(embedder) == {"base_model": "BAAI/bge-m3", "max_seq_length": 384, "freeze_layers": 4}


def saved_checkpoint(tmp_path: Path, args: argparse.Namespace) -> Path:
    """A checkpoint whose settings were written the way training writes them: by the on_save callback."""
    checkpoint = write_checkpoint(tmp_path / "checkpoint-3")
    state = argparse.Namespace(global_step=3, is_world_process_zero=True)
    ModelSettingsCallback(model_settings(args)).on_save(argparse.Namespace(output_dir=str(tmp_path)), state, None)
    assert (checkpoint / MODEL_SETTINGS_FILE).is_file()
    return checkpoint


@pytest.mark.parametrize("changes,message", [
    ({"lora_r": 8}, "was trained with --lora_r 16, this run has --lora_r 8"),
    ({"lora_target": ["q_proj", "v_proj"]}, "--lora_target all-linear, this run has --lora_target q_proj v_proj"),
    ({"qlora": True}, "--qlora off, this run has --qlora on"),
    ({"max_seq_length": 512}, "--max_seq_length 2048, this run has --max_seq_length 512"),
    ({"base_model": "Qwen/Qwen3-1.7B"}, "--base_model Qwen/Qwen2.5-1.5B-Instruct, this run has --base_model Qwen"),
])
def test_resuming_with_another_model_shaping_flag_is_refused_in_one_line(changes, message, tmp_path):
    checkpoint = saved_checkpoint(tmp_path, generator_args())
    with pytest.raises(UserError) as err:
        check_model_settings(checkpoint, model_settings(generator_args(**changes)))
    text = str(err.value)
    assert message in text and "another --output_dir" in text and "--resume_from_checkpoint none" in text
    assert "\n" not in text


def test_same_settings_other_training_flags_or_no_record_resume(tmp_path):
    checkpoint = saved_checkpoint(tmp_path, generator_args())
    check_model_settings(checkpoint, model_settings(generator_args(lr=1e-3, epochs=5)))  # not model-shaping
    (checkpoint / MODEL_SETTINGS_FILE).unlink()  # a checkpoint from before the record: nothing to compare
    check_model_settings(checkpoint, model_settings(generator_args(lora_r=8)))


def test_a_local_base_model_named_by_another_path_is_the_same(tmp_path, monkeypatch):
    model = tmp_path / "models" / "base"
    model.mkdir(parents=True)
    checkpoint = saved_checkpoint(tmp_path, generator_args(base_model=str(model)))
    monkeypatch.chdir(tmp_path)
    check_model_settings(checkpoint, model_settings(generator_args(base_model="models/base")))

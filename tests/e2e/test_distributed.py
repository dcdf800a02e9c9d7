"""The fine-tuning scripts under ``accelerate launch --config_file accelerate_config.yaml --num_processes 2``.

On a machine without a GPU accelerate starts two CPU processes and the Trainer trains with DDP over
gloo, so CI runs the real distributed code paths. accelerate launches ``tests/launch_script.py``, which
runs the script's own ``main()`` with test callbacks: every rank writes ``train.rank<R>.json`` (the step
it started from, steps trained, weights after the last step and after the best model was loaded, its
training rows and dev split, and what the loss contrasted each query with), and ``--sigterm_at_step N``
has rank 0 send the launcher a real SIGTERM during step N, which accelerate forwards to both ranks as on
a disconnect.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import LAUNCH_SCRIPT, REPO
from launch_script import weights_checksum
from safetensors.torch import load_file

from ragtune.core.data import SAMPLE_CORPUS, SAMPLE_TRAIN, load_corpus, load_queries, split_queries
from ragtune.train.checkpoints import is_complete_checkpoint

pytestmark = pytest.mark.distributed  # and slow, as everything under tests/e2e

EMBEDDING_TEMPLATE = ["--epochs", "5", "--batch_size", "8", "--max_seq_length", "384", "--evaluation_steps", "15",
                      "--lr", "1e-5", "--checkpoint_save_steps", "30", "--freeze_layers", "4", "--warmup_steps", "100",
                      "--resume_from_checkpoint", "auto"]
RERANKER_TEMPLATE = ["--batch_size", "3", "--gradient_accumulation_steps", "8", "--epochs", "4", "--lr", "2e-5",
                     "--fp16", "--gradient_checkpointing", "--dev_ratio", "0.2", "--num_hard_negatives", "2",
                     "--num_random_negatives", "1"]
# Short runs for what does not need the template. No dev split: the final model is the last step's.
QUICK = ["--epochs", "2", "--batch_size", "8", "--max_seq_length", "64", "--evaluation_steps", "4",
         "--checkpoint_save_steps", "4", "--warmup_steps", "2", "--lr", "5e-4", "--freeze_layers", "2",
         "--hard_negative_source", "bm25", "--dev_ratio", "0"]


def free_port() -> int:
    """A port for the rendezvous: concurrent launches must not share accelerate's default 29500."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(script: str, *args: str, debug_dir: Path, sigterm_at_step: int = 0,
           timeout: int = 900) -> subprocess.CompletedProcess:
    """``accelerate launch`` as the README says, with 2 processes, of the script's main() with test callbacks."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(REPO / "accelerate_config.yaml"), "--num_processes", "2", "--main_process_port", str(free_port()),
               str(LAUNCH_SCRIPT), script, "--record", str(debug_dir),
               *(["--sigterm_at_step", str(sigterm_at_step)] if sigterm_at_step else []), "--", *args]
    # On SIGTERM the launcher gives the ranks TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds (30 by default) to save
    # their checkpoint before it kills them; a CI machine running other jobs can need more.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
           "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "60"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def per_rank(debug_dir: Path) -> list[dict]:
    files = sorted(debug_dir.glob("train.rank*.json"))
    assert [f.name for f in files] == ["train.rank0.json", "train.rank1.json"], files
    dumps = [json.loads(f.read_text()) for f in files]
    assert [d["world_size"] for d in dumps] == [2, 2]  # really one DDP run, not two single-process runs
    return dumps


def tail(result: subprocess.CompletedProcess) -> str:
    return (result.stdout[-2000:] + "\n---\n" + result.stderr[-6000:])


def final_models(out: Path) -> list[Path]:
    """Folders holding a model outside the Trainer's checkpoints."""
    return sorted(p.parent for p in out.rglob("model.safetensors")
                  if not any(part.startswith("checkpoint-") for part in p.relative_to(out).parts))


def test_embedding_template_command_on_two_processes(tiny_st, tmp_path):
    out, debug = tmp_path / "out", tmp_path / "debug"
    result = launch("fine_tune_bge_m3.py", *EMBEDDING_TEMPLATE, "--base_model", str(tiny_st), "--output_dir", str(out),
                    debug_dir=debug)
    assert result.returncode == 0, tail(result)
    assert "2 process(es)" in result.stderr and "gathered across processes" in result.stderr

    # Exactly one final model, one set of outputs, written once.
    assert final_models(out) == [out]
    assert len(list(out.glob("runs/*/events.out.tfevents.*"))) == 1
    assert result.stdout.count("Dev metrics (20 held-out queries)") == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2

    # The dev split and the mined training rows are the same on both ranks (and are the seeded split).
    run0, run1 = per_rank(debug)
    corpus = load_corpus(SAMPLE_CORPUS)
    _, dev = split_queries(load_queries(SAMPLE_TRAIN, corpus), 0.2, 42)
    assert run0["dev_queries"] == run1["dev_queries"] == [q.query for q in dev]
    assert run0["train_rows"] == run1["train_rows"]

    # Both ranks end with the same weights, and they are the saved model's.
    assert run0["final_weights"] == run1["final_weights"]
    from sentence_transformers import SentenceTransformer

    assert weights_checksum(SentenceTransformer(str(out))) == run0["final_weights"]
    assert run0["global_step"] == run1["global_step"] == metrics["global_step"]

    # Every query was contrasted with the passages of both ranks: the loss saw 2 x local rows x (1 + hard
    # negatives) candidates, rank r's slice of them is exactly rank r's own positives (and, column by column,
    # its hard negatives: still aligned with their queries after the gather).
    records0, records1 = run0["loss_records"], run1["loss_records"]
    assert len(records0) == len(records1) == metrics["global_step"]
    for step0, step1 in zip(records0, records1):
        assert step0["local_rows"] == step1["local_rows"] >= 1
        assert step0["columns"] == 2  # positive + 1 hard negative (the template's default)
        assert step0["candidates"] == step1["candidates"] == 2 * step0["local_rows"] * step0["columns"]
        for column in range(step0["columns"]):
            both = [step0["local"][column], step1["local"][column]]
            assert step0["gathered"][column] == pytest.approx(both, rel=1e-5, abs=1e-5)
            assert step1["gathered"][column] == pytest.approx(both, rel=1e-5, abs=1e-5)
    assert max(r["local_rows"] for r in records0) == 8  # full batches exist: 16 rows in a global batch
    # Every row is trained every epoch (the labels keep many global batches below 16 rows: none is dropped).
    assert run0["max_steps"] == 5 * run0["steps_per_epoch"]
    first_epoch = records0[:run0["steps_per_epoch"]] + records1[:run0["steps_per_epoch"]]
    assert sum(r["local_rows"] for r in first_epoch) >= len(run0["train_rows"]["anchor"])


def check_two_process_resume(script: str, args: list[str], tmp_path: Path, stop_in_epoch: int = 3) -> None:
    """SIGTERM inside the second epoch, resume, and compare with an uninterrupted 2-process run."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    result = launch(script, *args, "--output_dir", str(straight), debug_dir=tmp_path / "d0")
    assert result.returncode == 0, tail(result)
    first = per_rank(tmp_path / "d0")[0]
    total, steps_per_epoch = first["global_step"], first["steps_per_epoch"]
    assert total == 2 * steps_per_epoch
    stop_at = steps_per_epoch + stop_in_epoch  # inside the second epoch: resuming must skip part of a reshuffled epoch

    # A real SIGTERM to the launcher during step `stop_at`: both ranks stop at the same step and checkpoint.
    # Known flake, not understood yet: now and then (seen in several runs on a loaded machine, never in a run
    # alone) a rank hangs after the launcher forwards the signal, and the launcher kills both before they
    # checkpoint. The interrupted run is then tried once more, from scratch; resuming itself is checked below
    # every time.
    for attempt in range(2):
        shutil.rmtree(resumed, ignore_errors=True)
        shutil.rmtree(tmp_path / "d1", ignore_errors=True)
        result = launch(script, *args, "--output_dir", str(resumed), debug_dir=tmp_path / "d1",
                        sigterm_at_step=stop_at)
        assert result.returncode != 0
        assert result.stderr.count("Received SIGTERM") == 2, tail(result)
        if len(list((tmp_path / "d1").glob("train.rank*.json"))) == 2:
            break
    assert len(list((tmp_path / "d1").glob("train.rank*.json"))) == 2, tail(result)
    stop0, stop1 = per_rank(tmp_path / "d1")
    assert stop0["global_step"] == stop1["global_step"]
    stopped = stop0["global_step"]
    assert stop_at <= stopped < total and stopped % steps_per_epoch
    assert is_complete_checkpoint(resumed / f"checkpoint-{stopped}")
    assert all((resumed / f"checkpoint-{stopped}" / f"rng_state_{rank}.pth").is_file() for rank in (0, 1))
    assert not (resumed / "metrics.json").exists()

    result = launch(script, *args, "--output_dir", str(resumed), debug_dir=tmp_path / "d2")
    assert result.returncode == 0, tail(result)
    run0, run1 = per_rank(tmp_path / "d2")
    assert run0["start_step"] == run1["start_step"] == stopped  # it resumed, on both ranks
    assert run0["steps_trained"] == run1["steps_trained"] == total - stopped
    assert run0["global_step"] == run1["global_step"] == total
    # The last step's weights and the final (best) ones equal the uninterrupted run's, on both ranks.
    assert run0["last_step_weights"] == run1["last_step_weights"] == first["last_step_weights"]
    assert run0["final_weights"] == run1["final_weights"] == first["final_weights"]


def test_interrupted_two_process_run_resumes_like_an_uninterrupted_one(tiny_st, tmp_path):
    check_two_process_resume("fine_tune_bge_m3.py", [*QUICK, "--base_model", str(tiny_st)], tmp_path)


def test_interrupted_two_process_reranker_resumes_like_an_uninterrupted_one(tiny_cross_encoder, tmp_path):
    """The reranker's length-grouped sampler reshuffles per epoch: a resumed epoch must not replay epoch 0's order."""
    args = ["--base_model", str(tiny_cross_encoder), "--epochs", "2", "--batch_size", "2",
            "--gradient_accumulation_steps", "1", "--lr", "1e-3", "--evaluation_steps", "4",
            "--checkpoint_save_steps", "4", "--max_seq_length", "96", "--dev_ratio", "0", "--num_hard_negatives", "1",
            "--num_random_negatives", "0", "--hard_negative_source", "bm25"]
    check_two_process_resume("fine_tune_reranker.py", args, tmp_path)


def test_gradient_checkpointing_with_nothing_frozen_under_ddp(tiny_st, tmp_path):
    """Non-reentrant checkpointing under DDP; nothing frozen, so the unused BERT pooler is DDP's to skip."""
    out = tmp_path / "out"
    result = launch("fine_tune_bge_m3.py", *QUICK, "--base_model", str(tiny_st), "--output_dir", str(out),
                    "--gradient_checkpointing", "--freeze_layers", "0", "--max_steps", "3", debug_dir=tmp_path / "d")
    assert result.returncode == 0, tail(result)
    run0, run1 = per_rank(tmp_path / "d")
    assert run0["final_weights"] == run1["final_weights"] and run0["global_step"] == 3
    before, after = load_file(str(tiny_st / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before if "embeddings" in k)  # layer 0 trains too


def test_reranker_template_command_on_two_processes(tiny_cross_encoder, tmp_path):
    out, debug = tmp_path / "out", tmp_path / "debug"
    result = launch("fine_tune_reranker.py", *RERANKER_TEMPLATE, "--base_model", str(tiny_cross_encoder),
                    "--output_dir", str(out), debug_dir=debug)
    assert result.returncode == 0, tail(result)
    assert "2 process(es)" in result.stderr
    assert final_models(out) == [out]
    assert len(list(out.glob("runs/*/events.out.tfevents.*"))) == 1
    metrics = json.loads((out / "metrics.json").read_text())
    run0, run1 = per_rank(debug)
    assert run0["final_weights"] == run1["final_weights"]
    assert run0["global_step"] == run1["global_step"] == metrics["global_step"] > 0
    from sentence_transformers.cross_encoder import CrossEncoder

    assert weights_checksum(CrossEncoder(str(out))) == run0["final_weights"]

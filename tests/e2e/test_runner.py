"""The shared training runner's promises, checked on both fine-tuning scripts.

Interrupted runs resume exactly (and really resume: from the checkpoint's step, training only the
remaining steps), a SIGTERM gives a checkpoint and the process's exit code 143, and a run that fails
validation leaves a previous finished run byte-identical, also with --overwrite_output_dir.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import LAUNCH_SCRIPT, REPO, run_script
from launch_script import Recorder, SigtermAt

import fine_tune_bge_m3
import fine_tune_generator
import fine_tune_reranker
from ragtune.train.checkpoints import is_complete_checkpoint

# Short runs with a dev split (so the best model is not simply the last step) and a high learning rate
# (so any divergence after resuming shows in the weights).
EMBEDDING_ARGS = ["--epochs", "2", "--batch_size", "8", "--max_seq_length", "64", "--evaluation_steps", "2",
                  "--checkpoint_save_steps", "4", "--warmup_steps", "1", "--lr", "5e-4", "--freeze_layers", "2",
                  "--hard_negative_source", "bm25", "--max_steps", "8"]
RERANKER_ARGS = ["--max_steps", "6", "--evaluation_steps", "2", "--checkpoint_save_steps", "2", "--lr", "1e-3",
                 "--batch_size", "3", "--gradient_accumulation_steps", "2", "--max_seq_length", "128"]
GENERATOR_ARGS = ["--max_steps", "4", "--evaluation_steps", "2", "--checkpoint_save_steps", "2", "--lr", "1e-3",
                  "--batch_size", "2", "--max_seq_length", "512", "--max_new_tokens", "4", "--max_dev_generations", "2"]
# The generator's resume and SIGTERM tests are in test_fine_tune_generator.py (same runner, same assertions).
SCRIPTS = {
    "embedding": (fine_tune_bge_m3, "fine_tune_bge_m3.py", EMBEDDING_ARGS, "tiny_st", 8),
    "reranker": (fine_tune_reranker, "fine_tune_reranker.py", RERANKER_ARGS, "tiny_cross_encoder", 6),
}
ALL_SCRIPTS = {**SCRIPTS, "generator": (fine_tune_generator, "fine_tune_generator.py", GENERATOR_ARGS, "tiny_qwen2", 4)}


def dir_checksum(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the SHA-256 of its bytes (and its mtime: untouched means untouched)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() + f"@{p.stat().st_mtime_ns}"
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", SCRIPTS)
def test_interrupted_run_resumes_from_its_checkpoint_and_ends_like_an_uninterrupted_one(name, request, tmp_path):
    module, _, args, fixture, total = SCRIPTS[name]
    base = ["--base_model", str(request.getfixturevalue(fixture)), *args]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"

    first = Recorder()
    assert module.main([*base, "--output_dir", str(straight)], callbacks=[first]) == 0
    assert first.record["start_step"] == 0 and first.record["steps_trained"] == total

    stop_at = 3  # not a --checkpoint_save_steps multiple: the interrupt saves the step that was running
    assert module.main([*base, "--output_dir", str(resumed)], callbacks=[SigtermAt(stop_at)]) == 128 + signal.SIGTERM
    assert is_complete_checkpoint(resumed / f"checkpoint-{stop_at}")
    assert not (resumed / "metrics.json").exists()

    second = Recorder()
    assert module.main([*base, "--output_dir", str(resumed)], callbacks=[second]) == 0
    # It really resumed: from the checkpoint's step, training only the remaining steps...
    assert second.record["start_step"] == stop_at
    assert second.record["steps_trained"] == total - stop_at
    # ...and ends exactly where the uninterrupted run ended: last step's weights, and the best model's.
    assert second.record["last_step"] == first.record["last_step"] == total
    assert second.record["last_step_weights"] == first.record["last_step_weights"]
    assert second.record["final_weights"] == first.record["final_weights"]
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (straight, resumed))
    assert a["global_step"] == b["global_step"] == total
    assert Path(a["best_checkpoint"]).name == Path(b["best_checkpoint"]).name
    assert a["dev_metrics"]["after"] == pytest.approx(b["dev_metrics"]["after"], abs=1e-6)


@pytest.mark.parametrize("name", SCRIPTS)
def test_sigterm_saves_a_checkpoint_and_the_process_exits_143(name, request, tmp_path):
    _, script, args, fixture, _ = SCRIPTS[name]
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(LAUNCH_SCRIPT), script, "--sigterm_at_step", "2", "--",
         "--base_model", str(request.getfixturevalue(fixture)), *args, "--output_dir", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
    assert "Received SIGTERM" in result.stderr and "--resume_from_checkpoint auto" in result.stderr
    assert "Traceback" not in result.stderr
    assert is_complete_checkpoint(out / "checkpoint-2")
    assert not (out / "metrics.json").exists()


BAD_OVERWRITES = {
    "embedding": [["--freeze_layers", "99"], ["--base_model", "/no/such/model"],
                  ["--corpus", "/no/such/corpus.csv"]],
    "reranker": [["--base_model", "/no/such/model"], ["--embedding_model", "/no/such/model"]],
    "generator": [["--lora_target", "no_such_proj"], ["--max_seq_length", "16"]],
}


@pytest.mark.parametrize("name", BAD_OVERWRITES)
def test_a_failed_overwrite_leaves_the_finished_run_byte_identical(name, request, tmp_path):
    module, script, args, fixture, _ = ALL_SCRIPTS[name]
    out = tmp_path / "out"
    argv = ["--base_model", str(request.getfixturevalue(fixture)), *args, "--max_steps", "4", "--output_dir", str(out)]
    assert module.main(argv) == 0
    assert (out / "metrics.json").is_file() and list(out.glob("checkpoint-*"))
    before = dir_checksum(out)

    # Each of these fails a check that needs the data or the model: the previous run must be left as it was.
    for bad_flags in BAD_OVERWRITES[name]:
        result = run_script(script, *argv, *bad_flags, "--overwrite_output_dir")
        assert result.returncode == 2, (bad_flags, result.stderr[-3000:])
        assert "Traceback" not in result.stderr
        assert dir_checksum(out) == before, bad_flags

    # A valid overwrite does train again (and only then clears the previous run).
    assert module.main([*argv, "--overwrite_output_dir"]) == 0
    assert dir_checksum(out) != before

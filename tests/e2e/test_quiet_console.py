"""What the three fine-tuning scripts print, run as users run them with output going to a file (a pipe here): a
demo-sized run prints about 25 lines outside progress bars, one line per dev evaluation instead of the Trainer's
raw dictionaries, none of the known harmless library lines, no terminal control code, and ends with the next
command to run; --verbose brings the detail back. Also: no "starting fresh" line before a flag error, a
--save_only_model checkpoint refused for resuming in one line, --no_keep_checkpoints."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import assert_one_clear_error, run_script

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# Demo-sized: 8 optimizer steps, dev metrics before training and every 4 steps (3 evaluations).
DEMO = ["--max_steps", "8", "--evaluation_steps", "4", "--checkpoint_save_steps", "4", "--warmup_steps", "0",
        "--max_seq_length", "64"]
MAX_LINES = 25  # the start-up summary, a line per evaluation, the dev table, what was saved and what next
# Warnings about the run's own result (tiny random models: below BM25, not above their base): findings, not noise,
# so not counted; any other warning fails the test.
RUN_FINDINGS = ("scores below BM25 on dev", "is not above the base model on dev")
PROGRESS_BAR = re.compile(r"^\s*\d+%\||\d+/\d+ \[[^\]]*\]\s*$")
# Lines a quiet run must not print: the Trainer's raw dictionaries, sentence-transformers' INFO chatter, the
# harmless warnings, transformers' load-report table, library-internal progress bars.
NOISE = ["{'loss'", "'eval_samples_per_second'", "No device provided", "pin_memory", "FutureWarning",
         "gradient_checkpointing", "Writing model shards", "Computing widget examples", "Loading weights",
         "Saving model checkpoint", "| MISSING", "Loading best model"]


def printed_lines(output: str) -> list[str]:
    """The non-blank lines of a run's output outside progress bars (a bar redraws with carriage returns)."""
    pieces = (piece.strip() for line in output.split("\n") for piece in line.split("\r"))
    return [piece for piece in pieces if piece and not PROGRESS_BAR.search(piece)]


def assert_quiet(result, evaluations: int, next_command: str) -> list[str]:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    lines = printed_lines(output)
    findings = [line for line in lines if " WARNING " in line]
    assert [line for line in findings if not any(finding in line for finding in RUN_FINDINGS)] == []
    assert len(lines) - len(findings) <= MAX_LINES, "\n".join(lines)
    for noise in NOISE:
        assert noise not in output, noise
    assert "\x1b" not in output  # a log file gets no colour or cursor codes
    assert sum(" INFO ragtune.train.callbacks: dev @ step " in line for line in lines) == evaluations, output
    assert f"Next: {next_command}" in output
    return lines


@pytest.fixture(scope="module")
def embedding_runs(tiny_st, tmp_path_factory) -> dict:
    """The embedding script quiet (with --save_only_model) and with --verbose."""
    root = tmp_path_factory.mktemp("quiet-embedding")
    runs = {}
    for name, extra in (("quiet", ["--save_only_model"]), ("verbose", ["--verbose", "--gradient_checkpointing"])):
        out = root / name
        runs[name] = (out, run_script("fine_tune_bge_m3.py", "--base_model", str(tiny_st), "--output_dir", str(out),
                                      *DEMO, "--hard_negative_source", "bm25", *extra, env=ONE_THREAD))
    return runs


def test_a_demo_embedding_run_prints_a_line_per_evaluation_and_what_to_run_next(embedding_runs):
    out, result = embedding_runs["quiet"]
    assert_quiet(result, evaluations=3, next_command=f"python fine_tune_reranker.py --embedding_model {out}")
    assert "ndcg@5" in result.stdout and "ndcg@3" not in result.stdout  # the console table: the main cutoff
    assert set(json.loads((out / "metrics.json").read_text())["dev_metrics"]["after"]) >= {"ndcg@3", "ndcg@7"}


def test_verbose_brings_the_detail_back_and_still_no_control_code(embedding_runs):
    out, result = embedding_runs["verbose"]
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    for detail in ("'eval_dev_ndcg@5'", "{'loss'", "No device provided", "FutureWarning", "ndcg@3"):
        assert detail in output, detail
    assert "\x1b" not in output
    # The evaluator ran once per evaluation during training and never again for the final model: the best
    # checkpoint's metrics come from the training log.
    assert output.count("DEBUG ragtune.train.evaluator: dev @ step") == 3
    metrics = json.loads((out / "metrics.json").read_text())
    state = json.loads((Path(metrics["best_checkpoint"]) / "trainer_state.json").read_text())
    best = [e for e in state["log_history"] if e.get("step") == state["best_global_step"] and "eval_dev_ndcg@5" in e]
    assert metrics["dev_metrics"]["after"] == {k.removeprefix("eval_dev_"): v for k, v in best[-1].items()
                                               if k.startswith("eval_dev_")}


def test_a_save_only_model_checkpoint_is_refused_for_resuming_in_one_line(embedding_runs, tmp_path):
    out, _ = embedding_runs["quiet"]
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert checkpoints and not any((c / "optimizer.pt").exists() for c in checkpoints)
    result = run_script("fine_tune_bge_m3.py", "--output_dir", str(tmp_path / "again"), "--resume_from_checkpoint",
                        str(checkpoints[0]), timeout=180)
    assert_one_clear_error(result, "saved with --save_only_model (weights only, no optimizer.pt / scheduler.pt): "
                                   "not resumable")


def test_no_starting_fresh_line_before_a_flag_error(tmp_path):
    result = run_script("fine_tune_bge_m3.py", "--base_model", str(tmp_path / "no-such-model"), "--output_dir",
                        str(tmp_path / "out"), "--freeze_layers", "-1", timeout=180)
    assert_one_clear_error(result, "--freeze_layers must be >= 0")
    assert "starting fresh" not in result.stderr and "No checkpoint" not in result.stderr


def test_a_demo_reranker_run_is_quiet_and_keeps_no_checkpoint_when_asked(tiny_cross_encoder, tmp_path):
    out = tmp_path / "reranker"
    result = run_script("fine_tune_reranker.py", "--base_model", str(tiny_cross_encoder), "--output_dir", str(out),
                        *DEMO, "--batch_size", "4", "--gradient_accumulation_steps", "1", "--gradient_checkpointing",
                        "--no_keep_checkpoints", env=ONE_THREAD)
    assert_quiet(result, evaluations=3, next_command="python fine_tune_generator.py")
    assert f"python evaluate_rag.py --reranker_models {out}" in result.stderr
    assert not list(out.glob("checkpoint-*")) and (out / "model.safetensors").is_file()
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert sum("eval_dev_ndcg@5" in entry for entry in history) == 3  # the log history stays


def test_a_demo_generator_run_is_quiet(tiny_qwen2, tmp_path):
    out = tmp_path / "generator"
    result = run_script("fine_tune_generator.py", "--base_model", str(tiny_qwen2), "--output_dir", str(out),
                        "--max_steps", "4", "--evaluation_steps", "2", "--checkpoint_save_steps", "2",
                        "--batch_size", "2", "--gradient_accumulation_steps", "1", "--max_seq_length", "384",
                        "--max_new_tokens", "4", "--max_dev_generations", "4", env=ONE_THREAD)
    assert_quiet(result, evaluations=3, next_command=f"python evaluate_rag.py --generator_local {tiny_qwen2} "
                                                     f"--generator_adapter {out}")
    assert len(json.loads((out / "metrics.json").read_text())["dev_answers"]) == 4

"""Interruptions and broken or mismatched checkpoints, as a user meets them, with real processes and signals.

- A SIGTERM during the generator's dev evaluation stops generating at once and saves the step it followed
  (nothing, said plainly, before the first step).
- A second Ctrl-C stops at once without saving, in one line that says where a rerun starts (exit 130).
- ``auto`` resume skips a checkpoint whose optimizer state is truncated and says so; a changed model-shaping
  flag (``--lora_r``) is refused in one line.
- A dev-metric tie goes to the later checkpoint; an adapter equal to its base and a merged model that answers
  like the base are warnings.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import LAUNCH_SCRIPT, REPO, TESTS, error_lines, run_script

from ragtune.train.checkpoints import MODEL_SETTINGS_FILE, is_complete_checkpoint

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
GENERATOR = ["--max_steps", "4", "--evaluation_steps", "2", "--checkpoint_save_steps", "4", "--lr", "1e-3",
             "--batch_size", "2", "--max_seq_length", "512", "--max_new_tokens", "24", "--max_dev_generations", "6",
             "--generation_batch_size", "2"]
RERANKER = ["--max_steps", "6", "--evaluation_steps", "2", "--checkpoint_save_steps", "2", "--lr", "1e-3",
            "--batch_size", "3", "--gradient_accumulation_steps", "2", "--max_seq_length", "128"]

# Runs a script's main() with a test hook (argv: hook, step, script, --, script flags), and prints what the
# tests count to stderr at exit:
#   sigterm_in_eval N  - a real SIGTERM at the first generated token of the dev evaluation after step N (0: the
#                        start-of-training evaluation); counts the tokens generated after it.
#   second_ctrl_c N    - two real SIGINTs as step N begins (a user pressing Ctrl-C twice).
LAUNCHER = textwrap.dedent("""
    import atexit, importlib.util, os, signal, sys
    repo, tests = sys.argv[1], sys.argv[2]
    hook, step, script = sys.argv[3], int(sys.argv[4]), sys.argv[5]
    script_args = sys.argv[sys.argv.index("--") + 1:]
    sys.path[:0] = [repo, tests]
    from transformers import TrainerCallback
    from launch_script import Recorder

    seen = {"armed": False, "signalled": False, "tokens_after_signal": 0}

    class Hook(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            seen["armed"] = hook == "sigterm_in_eval" and step == 0

        def on_step_begin(self, args, state, control, **kwargs):
            if hook == "second_ctrl_c" and state.global_step + 1 == step:
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)

        def on_step_end(self, args, state, control, **kwargs):
            seen["armed"] = seen["armed"] or (hook == "sigterm_in_eval" and state.global_step == step)

    if hook == "sigterm_in_eval":
        import transformers.models.qwen2.modeling_qwen2 as qwen2

        forward = qwen2.Qwen2ForCausalLM.forward

        def counting_forward(self, input_ids=None, *args, **kwargs):
            if seen["armed"] and input_ids is not None and input_ids.shape[1] == 1:  # one generated token
                if seen["signalled"]:
                    seen["tokens_after_signal"] += 1
                else:
                    seen["signalled"] = True
                    os.kill(os.getpid(), signal.SIGTERM)
            return forward(self, input_ids, *args, **kwargs)

        qwen2.Qwen2ForCausalLM.forward = counting_forward

    recorder = Recorder()
    atexit.register(lambda: print(f"HOOK signalled={seen['signalled']} tokens_after_signal="
                                  f"{seen['tokens_after_signal']} steps_trained={recorder.record['steps_trained']}",
                                  file=sys.stderr, flush=True))
    spec = importlib.util.spec_from_file_location("script", os.path.join(repo, script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from ragtune.core.errors import run_main

    run_main(lambda argv: module.main(argv, callbacks=[Hook(), recorder]), script_args)
""")


def launch(hook: str, step: int, script: str, *args: str) -> tuple[subprocess.CompletedProcess, dict[str, int]]:
    """Run ``script`` under the hook; the process result and the counts it printed."""
    result = subprocess.run([sys.executable, "-c", LAUNCHER, str(REPO), str(TESTS), hook, str(step), script, "--",
                             *args], cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **ONE_THREAD})
    found = re.search(r"HOOK signalled=(\w+) tokens_after_signal=(\d+) steps_trained=(\d+)", result.stderr)
    assert found, result.stderr[-4000:]
    return result, {"signalled": found.group(1) == "True", "tokens_after_signal": int(found.group(2)),
                    "steps_trained": int(found.group(3))}


def checkpoints(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("checkpoint-*"))


# ---------------------------------------------------------------------------- item 6: SIGTERM during dev answers


def test_sigterm_during_the_dev_evaluation_stops_generating_and_saves_that_step(tiny_qwen2, tmp_path):
    out = tmp_path / "out"
    argv = ["--base_model", str(tiny_qwen2), *GENERATOR, "--output_dir", str(out)]
    result, seen = launch("sigterm_in_eval", 2, "fine_tune_generator.py", *argv)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-4000:]
    assert seen["signalled"] and seen["tokens_after_signal"] <= 1, seen  # not the rest of the evaluation
    assert seen["steps_trained"] == 2  # no further step
    assert "Traceback" not in result.stderr
    # Saved right after: step 2 (not a --checkpoint_save_steps multiple), resumable, with its settings.
    assert checkpoints(out) == ["checkpoint-2"] and is_complete_checkpoint(out / "checkpoint-2")
    assert json.loads((out / "checkpoint-2" / MODEL_SETTINGS_FILE).read_text())["lora_r"] == 16
    assert "checkpoint saved to" in result.stderr and "checkpoint-2" in result.stderr

    rerun = run_script("fine_tune_generator.py", *argv, env=ONE_THREAD)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert "Resuming from" in rerun.stderr and json.loads((out / "metrics.json").read_text())["global_step"] == 4


def test_sigterm_during_the_evaluation_before_the_first_step_says_there_is_nothing_to_save(tiny_qwen2, tmp_path):
    out = tmp_path / "out"
    result, seen = launch("sigterm_in_eval", 0, "fine_tune_generator.py", "--base_model", str(tiny_qwen2),
                          *GENERATOR, "--output_dir", str(out))
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-4000:]
    assert seen["signalled"] and seen["tokens_after_signal"] <= 1 and seen["steps_trained"] == 0, seen
    assert "Traceback" not in result.stderr and "None" not in result.stderr
    assert "there is nothing to save" in result.stderr and "starts fresh" in result.stderr
    assert checkpoints(out) == []


# ---------------------------------------------------------------------------- item 15: a second Ctrl-C


def test_a_second_ctrl_c_stops_at_once_without_a_traceback_and_says_where_a_rerun_starts(tiny_cross_encoder,
                                                                                          tmp_path):
    out = tmp_path / "out"
    argv = ["--base_model", str(tiny_cross_encoder), *RERANKER, "--output_dir", str(out)]
    result, seen = launch("second_ctrl_c", 3, "fine_tune_reranker.py", *argv)
    assert result.returncode == 130, result.stderr[-4000:]
    assert "Traceback" not in result.stderr and "KeyboardInterrupt" not in result.stderr
    assert seen["steps_trained"] == 2  # step 3 was not finished, nor saved
    assert checkpoints(out) == ["checkpoint-2"]
    lines = [line for line in result.stderr.splitlines() if "Second Ctrl-C" in line]
    assert len(lines) == 1 and "without saving" in lines[0] and str(out / "checkpoint-2") in lines[0], lines
    # Every script records its model-shaping flags in its checkpoints (here: the reranker's).
    assert json.loads((out / "checkpoint-2" / MODEL_SETTINGS_FILE).read_text())["max_seq_length"] == 128


# ---------------------------------------------------------------------------- items 7 and 8: resuming


def interrupted_at(step: int, script: str, *args: str) -> None:
    """A run of ``script`` stopped by a real SIGTERM during ``step`` (its own process, as a user's run is)."""
    result = subprocess.run([sys.executable, str(LAUNCH_SCRIPT), script, "--sigterm_at_step", str(step), "--", *args],
                            cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, **ONE_THREAD})
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-4000:]


def test_auto_resume_skips_a_checkpoint_with_a_truncated_optimizer_state(tiny_cross_encoder, tmp_path):
    out = tmp_path / "out"
    argv = ["--base_model", str(tiny_cross_encoder), *RERANKER, "--output_dir", str(out)]
    interrupted_at(5, "fine_tune_reranker.py", *argv)
    *_, previous, newest = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert newest.name == "checkpoint-5" and is_complete_checkpoint(previous)
    optimizer = newest / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:optimizer.stat().st_size // 2])  # a disk that filled up

    result = run_script("fine_tune_reranker.py", *argv)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Traceback" not in result.stderr
    skipped = [line for line in result.stderr.splitlines() if "Skipping checkpoint" in line]
    assert len(skipped) == 1 and "checkpoint-5: optimizer.pt does not load" in skipped[0], skipped
    assert f"Resuming from {previous}" in result.stderr
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 6


def test_resuming_with_another_lora_rank_is_refused_in_one_line(tiny_qwen2, tmp_path):
    out = tmp_path / "out"
    argv = ["--base_model", str(tiny_qwen2), *GENERATOR, "--max_dev_generations", "2", "--output_dir", str(out)]
    interrupted_at(3, "fine_tune_generator.py", *argv)
    assert is_complete_checkpoint(out / "checkpoint-3")

    result = run_script("fine_tune_generator.py", *argv, "--lora_r", "8", env=ONE_THREAD)
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output, output[-4000:]
    errors = error_lines(output)
    assert len(errors) == 1 and "was trained with --lora_r 16, this run has --lora_r 8" in errors[0], errors
    assert "another --output_dir" in errors[0] and "--resume_from_checkpoint none" in errors[0]
    assert "Fine-tuning the generator" not in output  # refused before the model was loaded


# ---------------------------------------------------------------------------- item 10: ties and an unchanged adapter


def test_a_run_that_learns_nothing_ends_on_its_last_tied_checkpoint_with_warnings(tiny_qwen2, tmp_path):
    """At --lr 1e-60 no weight moves: every dev evaluation ties, the later checkpoint wins each tie, and both the
    final adapter and the merged model are reported as equal to the base."""
    out = tmp_path / "out"
    result = run_script("fine_tune_generator.py", "--base_model", str(tiny_qwen2), *GENERATOR, "--lr", "1e-60",
                        "--checkpoint_save_steps", "2", "--merge", "--output_dir", str(out), env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert Path(metrics["best_checkpoint"]).name == "checkpoint-4"
    assert "The final adapter equals its base model" in result.stderr
    assert metrics["merged"]["same_as_base"] == metrics["merged"]["checked"] > 0
    assert "answers exactly like the base model" in result.stderr

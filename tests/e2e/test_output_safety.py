"""Nothing a user had is lost: the output-path guard and the output-dir lock, in real processes of every script.

Each case checks the exit code, the one error line, and that the inputs and any previous output are byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, assert_one_clear_error, run_script

from ragtune.core.data import SAMPLE_CORPUS, SAMPLE_TEST, SAMPLE_TRAIN
from ragtune.core.output_lock import LOCK_NAME

QUICK_BGE = ["--epochs", "1", "--batch_size", "4", "--max_seq_length", "64", "--evaluation_steps", "2",
             "--checkpoint_save_steps", "2", "--warmup_steps", "1", "--hard_negative_source", "bm25",
             "--max_steps", "2"]

_BM25_ONLY = ["--embedding_models"]  # nothing but BM25: no model to load


def _digest(*paths: Path) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and its digest: a previous run's folder must stay byte-identical."""
    return {str(p.relative_to(folder)): _digest(p)[0] for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def inputs(tmp_path) -> dict[str, Path]:
    """Copies of the sample data that a wrong output flag could overwrite."""
    copies = {}
    for name, source in (("corpus", SAMPLE_CORPUS), ("train", SAMPLE_TRAIN), ("test", SAMPLE_TEST)):
        copies[name] = tmp_path / f"{name}.csv"
        copies[name].write_bytes(Path(source).read_bytes())
    return copies


def _module(module: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def _audit_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return _module("ragtune.audit", *args, cwd=cwd)


def _split(*args: str) -> subprocess.CompletedProcess:
    return _module("ragtune.split", *args)


# ---------------------------------------------------------------------------- the guard


def test_audit_report_onto_the_corpus_is_refused_and_the_corpus_kept(inputs, tmp_path):
    before = _digest(inputs["corpus"], inputs["train"])
    result = _audit_cli("--corpus", str(inputs["corpus"]), "--train_data", str(inputs["train"]),
                        "--report", str(inputs["corpus"]), cwd=tmp_path)
    assert_one_clear_error(result, f"--report {inputs['corpus']} is the same path as --corpus")
    assert _digest(inputs["corpus"], inputs["train"]) == before


@pytest.mark.parametrize("script", ["fine_tune_bge_m3.py", "fine_tune_reranker.py", "fine_tune_generator.py"])
def test_training_audit_report_onto_the_training_data_is_refused(script, inputs, tmp_path):
    before = _digest(inputs["train"])
    out = tmp_path / "out"
    result = run_script(script, "--corpus", str(inputs["corpus"]), "--train_data", str(inputs["train"]),
                        "--audit_report", str(inputs["train"]), "--output_dir", str(out),
                        "--base_model", "/never/loaded")
    assert_one_clear_error(result, "--audit_report", out)
    assert "is the same path as --train_data" in result.stderr
    assert _digest(inputs["train"]) == before


def test_evaluation_report_onto_the_test_queries_is_refused(inputs, tmp_path):
    before = _digest(inputs["test"])
    out = tmp_path / "eval"
    result = run_script("evaluate_rag.py", *_BM25_ONLY, "--corpus", str(inputs["corpus"]), "--test_data", str(inputs["test"]),
                        "--audit_report", str(inputs["test"]), "--output_dir", str(out))
    assert_one_clear_error(result, "--audit_report", out)
    assert _digest(inputs["test"]) == before


def _bm25_evaluation(inputs: dict[str, Path], out: Path) -> Path:
    result = run_script("evaluate_rag.py", *_BM25_ONLY, "--corpus", str(inputs["corpus"]), "--test_data",
                        str(inputs["test"]), "--output_dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_predictions_and_the_ask_pages_cache_onto_what_an_evaluation_read_are_refused(inputs, tmp_path):
    """With --from no flag names the corpus or the models: the guard reads them from the evaluation."""
    evaluation = _bm25_evaluation(inputs, tmp_path / "eval")
    before = _digest(inputs["corpus"])
    result = run_script("predict_rag.py", "--from", str(evaluation), "--output", str(inputs["corpus"]))
    assert_one_clear_error(result, f"--output {inputs['corpus']} is the same path as the evaluated corpus (--from)")
    result = subprocess.run([sys.executable, "-m", "ragtune.app", "--from", str(evaluation), "--port", "0",
                             "--cache_dir", str(inputs["corpus"])], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert_one_clear_error(result, f"--cache_dir {inputs['corpus']} is a file; give a folder")
    assert _digest(inputs["corpus"]) == before


def test_predictions_onto_the_query_file_are_refused(inputs, tmp_path):
    before = _digest(inputs["test"])
    result = run_script("predict_rag.py", "--first_stage", "bm25", "--queries", str(inputs["test"]), "--output",
                        str(inputs["test"]))
    assert_one_clear_error(result, f"--output {inputs['test']} is the same path as --queries")
    assert _digest(inputs["test"]) == before


@pytest.mark.parametrize("report, message", [("train", "is the same path as --train_data"),
                                             ("out/train_train.csv", "is the same path as the train side of --output_dir")])
def test_the_splits_report_onto_its_input_or_its_own_output_is_refused(report, message, inputs, tmp_path):
    before = _digest(inputs["train"])
    report = inputs["train"] if report == "train" else tmp_path / report
    result = _split("--train_data", str(inputs["train"]), "--output_dir", str(tmp_path / "out"), "--report",
                    str(report))
    assert_one_clear_error(result, f"--report {report} {message}", tmp_path / "out")
    assert _digest(inputs["train"]) == before


def test_output_dir_inside_the_base_model_folder_is_refused(tiny_st, inputs, tmp_path):
    before = _tree(tiny_st)
    result = run_script("fine_tune_bge_m3.py", "--base_model", str(tiny_st), "--output_dir", str(tiny_st / "ft"),
                        "--corpus", str(inputs["corpus"]), "--train_data", str(inputs["train"]), *QUICK_BGE)
    assert_one_clear_error(result, "lies inside the --base_model folder", tiny_st / "ft")
    assert _tree(tiny_st) == before


def test_base_model_inside_the_output_dir_is_refused(tiny_st, inputs, tmp_path):
    """--overwrite_output_dir clears an output dir's checkpoints: training from one of them there would lose it."""
    out = tmp_path / "out"
    shutil.copytree(tiny_st, out / "checkpoint-2")
    result = run_script("fine_tune_bge_m3.py", "--base_model", str(out / "checkpoint-2"), "--output_dir", str(out),
                        "--corpus", str(inputs["corpus"]), "--train_data", str(inputs["train"]), *QUICK_BGE)
    assert_one_clear_error(result, "lies inside --output_dir")


def test_unwritable_report_path_is_reported_before_the_model_loads(inputs, tmp_path):
    """A report path whose folder is a file: one line, before anything heavy (the model is never loaded)."""
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    out = tmp_path / "out"
    result = run_script("fine_tune_reranker.py", "--corpus", str(inputs["corpus"]), "--train_data",
                        str(inputs["train"]), "--audit_report", str(blocker / "audit.md"), "--output_dir", str(out),
                        "--base_model", "/never/loaded")
    assert_one_clear_error(result, f"--audit_report {blocker / 'audit.md'}: {blocker} is a file, not a folder", out)


# ---------------------------------------------------------------------------- a failed run writes nothing


def test_a_run_failing_after_the_audit_writes_no_audit_report(inputs, tmp_path):
    """The model fails to load after the data was audited: no report, no output dir."""
    broken = tmp_path / "broken_model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    out, report = tmp_path / "out", tmp_path / "reports" / "audit.md"
    result = run_script("fine_tune_bge_m3.py", "--base_model", str(broken), "--output_dir", str(out),
                        "--corpus", str(inputs["corpus"]), "--train_data", str(inputs["train"]),
                        "--audit_report", str(report), *QUICK_BGE)
    assert result.returncode == 2, result.stderr[-3000:]
    assert not report.exists() and not out.exists()


# ---------------------------------------------------------------------------- the lock


def _hold_lock(out: Path) -> subprocess.Popen:
    """A live process (another run, as far as the lock can tell) holding ``out``'s lock."""
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    out.mkdir(parents=True, exist_ok=True)
    (out / LOCK_NAME).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                             "started": "2026-11-30 10:00:00", "command": "fine_tune_bge_m3.py"}))
    return holder


@pytest.mark.parametrize("script", ["fine_tune_bge_m3.py", "evaluate_rag.py"])
def test_a_second_run_on_a_locked_output_dir_stops_and_names_the_first(script, tiny_st, inputs, tmp_path):
    out = tmp_path / "out"
    holder = _hold_lock(out)
    try:
        before = _tree(out)
        args = (["--base_model", str(tiny_st), "--corpus", str(inputs["corpus"]), "--train_data",
                 str(inputs["train"]), *QUICK_BGE] if script.startswith("fine_tune") else
                [*_BM25_ONLY, "--corpus", str(inputs["corpus"]), "--test_data", str(inputs["test"])])
        result = run_script(script, *args, "--output_dir", str(out))
        assert_one_clear_error(result, f"--output_dir {out} is in use by another run (pid {holder.pid}")
        assert _tree(out) == before  # the other run's lock and files untouched
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("script", ["predict_rag.py", "ragtune.split"])
def test_predictions_and_a_split_stop_on_a_folder_another_run_holds(script, inputs, tmp_path):
    """predict_rag.py holds its cache folder (answers are appended there), the split its output folder."""
    out = tmp_path / "held"
    holder = _hold_lock(out)
    try:
        before = _tree(out)
        args = (["--first_stage", "bm25", "--output", str(tmp_path / "p.csv"), "--cache_dir", str(out)]
                if script == "predict_rag.py" else ["--train_data", str(inputs["train"]), "--output_dir", str(out)])
        result = run_script(script, *args) if script == "predict_rag.py" else _split(*args)
        flag = "--cache_dir" if script == "predict_rag.py" else "--output_dir"
        assert_one_clear_error(result, f"{flag} {out} is in use by another run (pid {holder.pid}")
        assert _tree(out) == before and not (tmp_path / "p.csv").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_with_a_warning_and_released(inputs, tmp_path):
    out = tmp_path / "eval"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    result = run_script("evaluate_rag.py", *_BM25_ONLY, "--corpus", str(inputs["corpus"]), "--test_data", str(inputs["test"]),
                        "--output_dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "taking over the lock of a run that is no longer running" in result.stderr
    assert (out / "results.json").is_file() and not (out / LOCK_NAME).exists()


def test_a_lock_from_another_machine_is_not_taken(inputs, tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "colab-vm-elsewhere"}))
    result = run_script("evaluate_rag.py", *_BM25_ONLY, "--corpus", str(inputs["corpus"]), "--test_data", str(inputs["test"]),
                        "--output_dir", str(out))
    assert_one_clear_error(result, "is locked by a run on another machine")
    assert (out / LOCK_NAME).exists()

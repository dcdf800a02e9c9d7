"""Flags and input files a user gets wrong: one clear line, exit code 2, before any model loads.

The scripts run as real subprocesses with a --base_model that does not exist, so a check that
slipped past the data and flag validation would show up as a model-loading error instead. The
checks themselves are tested in tests/unit/train/test_arguments.py.
"""

from __future__ import annotations

import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from conftest import REPO, run_script


def _corpus_dir(tmp_path: Path) -> tuple[list[str], str]:
    return ["--corpus", str(tmp_path)], f"--corpus: {tmp_path} is a directory, not a file"


def _cp1252_corpus(tmp_path: Path) -> tuple[list[str], str]:
    path = tmp_path / "corpus.csv"
    path.write_bytes("id,text\n1,Café au lait\n".encode("cp1252"))
    return (["--corpus", str(path)],
            f"--corpus: {path} is not UTF-8 (byte 0xe9 at position 13, line 2); save it as UTF-8 (Excel: Save As > "
            f"CSV UTF-8)")


def _non_object_jsonl(tmp_path: Path) -> tuple[list[str], str]:
    path = tmp_path / "train.jsonl"
    path.write_text('{"query": "q", "pos": ["p"]}\n[1, "abc"]\n', encoding="utf-8")
    return ["--train_data", str(path)], f"--train_data: {path} line 2: expected a JSON object"


def _freeze_minus_one(tmp_path: Path) -> tuple[list[str], str]:
    return ["--freeze_layers", "-1"], "--freeze_layers must be >= 0"


@pytest.mark.parametrize("case", [_freeze_minus_one, _corpus_dir, _cp1252_corpus, _non_object_jsonl],
                         ids=lambda f: f.__name__.strip("_"))
def test_embedding_script_rejects_bad_input_in_one_line_before_loading_a_model(tmp_path, case):
    flags, expected = case(tmp_path)
    out = tmp_path / "out"
    result = run_script("fine_tune_bge_m3.py", "--base_model", str(tmp_path / "no-such-model"), "--output_dir",
                        str(out), *flags, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line or line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-3000:]
    assert not out.exists()


def test_embedding_script_reads_a_corpus_with_nfd_headers(tmp_path):
    """The data passes, so the run gets as far as the (missing) model: the error is about --base_model."""
    path = tmp_path / "corpus.csv"
    rows = "".join(f"{i},passage {i}\n" for i in range(1, 100))
    path.write_text(f"STT,{unicodedata.normalize('NFD', 'Văn bản')}\n{rows}", encoding="utf-8")
    result = run_script("fine_tune_bge_m3.py", "--base_model", str(tmp_path / "no-such-model"), "--output_dir",
                        str(tmp_path / "out"), "--corpus", str(path), timeout=180)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "needs columns" not in result.stderr and "--base_model" in result.stderr, result.stderr[-3000:]


def test_evaluate_rag_rejects_a_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text('{"query": "q", "relevant_ids": [1]}\n\n[1, "abc"]\n', encoding="utf-8")
    result = run_script("evaluate_rag.py", "--test_data", str(path), "--output_dir", str(tmp_path / "out"), timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and f"--test_data: {path} line 3: expected a JSON object" in errors[0], result.stderr
    assert "got a list" in errors[0]


# What a flag check imports: run the script's main() in a fresh interpreter and list the heavy modules loaded.
_IMPORTED_BY_A_FLAG_ERROR = r"""
import os, runpy, sys
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(sys.argv[0]))  # as `python script.py` does
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    heavy = sorted(m for m in ("torch", "transformers", "sentence_transformers", "peft") if m in sys.modules)
    print("heavy modules:", heavy, file=sys.stderr)
"""


@pytest.mark.parametrize("script", ["fine_tune_bge_m3.py", "fine_tune_reranker.py", "fine_tune_generator.py"])
@pytest.mark.parametrize("args, message", [
    (["--lora_rr", "4"], "unrecognized arguments: --lora_rr"),
    (["--lr", "0"], "--lr must be positive"),
    (["--train_data", "missing.csv"], "--train_data: file not found: missing.csv"),
], ids=["mistyped", "bad value", "missing file"])
def test_a_flag_error_is_told_before_the_training_stack_is_imported(script, args, message, tmp_path):
    """A typo gets its one line in about a second, not after ~10 s of importing torch and transformers."""
    result = subprocess.run([sys.executable, "-c", _IMPORTED_BY_A_FLAG_ERROR, str(REPO / script), *args],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert "heavy modules: []" in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir()), "a flag error writes nothing (not even the default output dir's lock)"

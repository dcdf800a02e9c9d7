"""The output-path guard and the output-dir lock on their own (the scripts' use: tests/e2e/test_output_safety.py)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys

import pytest

from ragtune.core.errors import UserError
from ragtune.core.output_lock import LOCK_NAME, OutputDirLock
from ragtune.core.output_paths import check_output_paths


def test_an_output_equal_to_an_input_is_refused(tmp_path):
    data = tmp_path / "c.csv"
    data.write_text("x")
    with pytest.raises(UserError, match="--report .* is the same path as --corpus"):
        check_output_paths({"--report": str(tmp_path / "sub" / ".." / "c.csv")}, {"--corpus": data})


def test_two_outputs_at_one_path_are_refused(tmp_path):
    report = tmp_path / "out" / "q_train.csv"
    with pytest.raises(UserError, match="--report .* is the same path as the train side of --output_dir: one would "
                                        "overwrite the other; choose another --report"):
        check_output_paths({"the train side of --output_dir": report,
                            "--report": tmp_path / "out" / ".." / "out" / "q_train.csv"}, {})
    check_output_paths({"the train side of --output_dir": report, "--report": tmp_path / "audit.md"}, {})
    link = tmp_path / "link.csv"  # a hard link to an input is that input (a symbolic one resolves to it)
    (tmp_path / "c.csv").write_text("x")
    os.link(tmp_path / "c.csv", link)
    with pytest.raises(UserError, match="the test side of --output_dir .* is the same path as --train_data: .* "
                                        "choose another --output_dir"):
        check_output_paths({"the test side of --output_dir": link}, {"--train_data": tmp_path / "c.csv"})


def test_outputs_beside_inputs_and_hub_ids_pass(tmp_path):
    (tmp_path / "c.csv").write_text("x")
    check_output_paths({"--output_dir": tmp_path / "out", "--report": tmp_path / "audit.md"},
                       {"--corpus": tmp_path / "c.csv", "--base_model": "BAAI/bge-m3", "--test_data": None})


def test_a_read_only_folder_is_reported(tmp_path, monkeypatch):
    """Root ignores permission bits, so the check is exercised through os.access itself."""
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(UserError, match=r"--output_dir .*out: cannot write in .* \(read-only or no permission\)"):
        check_output_paths({"--output_dir": tmp_path / "out"}, {})


def test_the_lock_records_its_run_and_leaves_no_trace(tmp_path):
    out = tmp_path / "new" / "out"
    with OutputDirLock(out) as lock:
        record = json.loads(lock.path.read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    assert not out.exists()  # created for the lock, empty again: removed
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "metrics.json").write_text("{}")
    with OutputDirLock(kept):
        pass
    assert sorted(p.name for p in kept.iterdir()) == ["metrics.json"]


def test_a_live_holder_is_refused_and_a_dead_one_taken_over(tmp_path, caplog):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": live.pid, "host": socket.gethostname(),
                                                      "command": "evaluate_rag.py"}))
        with pytest.raises(UserError, match=f"in use by another run \\(pid {live.pid} on .*evaluate_rag.py"):
            OutputDirLock(tmp_path).acquire()
    finally:
        live.kill()
        live.wait()
    with caplog.at_level(logging.WARNING):
        with OutputDirLock(tmp_path):
            assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert "taking over the lock of a run that is no longer running" in caplog.text

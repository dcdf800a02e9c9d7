"""The data audit's command line, ``python -m ragtune.audit``, in a real subprocess: sources untouched, no value
printed, ``--pii error`` exits 2 and writes nothing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
from conftest import REPO, error_lines
from planted_pii import PLANTED, assert_nothing_leaks


def _write_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    corpus = tmp_path / "corpus.csv"
    pd.DataFrame({"STT": [1, 2, 3], "Văn bản": [s for s, _, _ in PLANTED[:3]]}).to_csv(
        corpus, index=False, encoding="utf-8-sig")
    train = tmp_path / "train.csv"
    pd.DataFrame({"Query": [s for s, _, _ in PLANTED[3:]] + ["Câu lạc bộ được thành lập năm nào?"],
                  "Ground truth document": [1] * (len(PLANTED) - 3) + [2],
                  "Ground truth answer": ["ok"] * (len(PLANTED) - 2)}).to_csv(train, index=False, encoding="utf-8-sig")
    test = tmp_path / "test.csv"
    pd.DataFrame({"Query": ["nam nao cau lac bo duoc thanh lap"], "Ground truth document": [2]}).to_csv(
        test, index=False, encoding="utf-8-sig")
    return corpus, train, test


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "ragtune.audit", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def _digests(*paths: Path) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def test_cli_warn_and_redact_leave_sources_untouched_and_print_no_value(tmp_path):
    files = _write_files(tmp_path)
    before = _digests(*files)
    for policy in ("warn", "redact"):
        report = tmp_path / f"audit-{policy}.md"
        proc = _cli("--corpus", str(files[0]), "--train_data", str(files[1]), "--test_data", str(files[2]),
                    "--pii", policy, "--report", str(report), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        summary = json.loads(proc.stdout)
        # One sentence holds two phones.
        assert summary["pii"]["total"] == len(PLANTED) + 1 and summary["pii"]["redacted"] is (policy == "redact")
        assert summary["leakage"]["leaked_test_queries"] == 1
        text = report.read_text(encoding="utf-8")
        assert "09•••••678" in text
        for output in (proc.stdout, proc.stderr, text):
            assert_nothing_leaks(output)
    assert _digests(*files) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit-redact.md", "audit-warn.md", "corpus.csv",
                                                          "test.csv", "train.csv"]


def test_cli_error_exits_2_with_one_line_and_writes_nothing(tmp_path):
    files = _write_files(tmp_path)
    before = _digests(*files)
    report = tmp_path / "audit.md"
    proc = _cli("--corpus", str(files[0]), "--train_data", str(files[1]), "--pii", "error", "--report", str(report),
                "--summary_json", str(tmp_path / "summary.json"), cwd=tmp_path)
    assert proc.returncode == 2
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and "--pii error" in errors[0] and "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert_nothing_leaks(proc.stderr)
    assert not report.exists() and not (tmp_path / "summary.json").exists()
    assert _digests(*files) == before


def test_cli_missing_file_is_a_user_error(tmp_path):
    proc = _cli("--corpus", str(tmp_path / "nope.csv"), "--train_data", str(tmp_path / "t.csv"), cwd=tmp_path)
    assert proc.returncode == 2 and "--corpus: file not found" in proc.stderr and "Traceback" not in proc.stderr

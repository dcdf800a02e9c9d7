"""ragtune.core.io.when_imported: the libraries' logging and progress bars are set when they load, so that a script
fails on a bad flag before it spends seconds importing them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ragtune.core.io import when_imported

REPO = Path(__file__).resolve().parents[3]


def test_a_callback_runs_right_after_the_first_import_and_once(tmp_path, monkeypatch):
    (tmp_path / "late_module.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    when_imported("late_module", lambda: seen.append(sys.modules["late_module"].VALUE))
    assert seen == []
    import late_module  # noqa: F401

    assert seen == [1]
    when_imported("late_module", lambda: seen.append(2))  # already imported: at once
    assert seen == [1, 2]
    del sys.modules["late_module"]


def test_a_script_with_a_bad_flag_does_not_load_the_libraries():
    code = ("import sys, evaluate_rag\n"
            "try:\n    evaluate_rag.main(['--k', '0'])\nexcept Exception as err:\n    print(type(err).__name__)\n"
            "print(sorted(m for m in ('transformers', 'sentence_transformers') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert proc.stdout.split() == ["UserError", "[]"], proc.stdout + proc.stderr[-2000:]

"""run_main: what a user sees when a script stops on their error or their Ctrl-C (real processes)."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO

SCRIPT = """
import sys
from ragtune.core.errors import UserError, run_main

def main(argv):
    if argv == ["user-error"]:
        raise UserError("--corpus c.csv row 3: blank text")
    if argv == ["key-in-a-path"]:  # a token pasted into a file flag, echoed by the error about the file
        raise UserError("--corpus: file not found: hf_" + "a1B2c3D4e5F6g7H8i9J0")
    if argv == ["ctrl-c"]:
        raise KeyboardInterrupt
    raise RuntimeError("a bug")

run_main(main, sys.argv[1:])
"""


def _run(arg: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, arg], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_user_errors_exit_2_in_one_line_and_bugs_keep_their_traceback():
    user = _run("user-error")
    assert user.returncode == 2 and user.stderr.strip() == "error: --corpus c.csv row 3: blank text"
    pasted = _run("key-in-a-path")
    assert pasted.returncode == 2 and pasted.stderr.strip() == "error: --corpus: file not found: <redacted>"
    bug = _run("bug")
    assert bug.returncode == 1 and "Traceback" in bug.stderr and "RuntimeError: a bug" in bug.stderr


def test_ctrl_c_outside_training_exits_130_without_a_traceback():
    interrupted = _run("ctrl-c")
    assert interrupted.returncode == 130, interrupted.stderr
    assert "Traceback" not in interrupted.stderr and "Interrupted (Ctrl-C)" in interrupted.stderr

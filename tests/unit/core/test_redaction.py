"""What ragtune shows: argparse's messages without secrets, and every shown text (log lines included) with personal
values masked once the audit says so (``--pii warn``)."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from conftest import REPO
from planted_pii import PLANTED, assert_nothing_leaks

from ragtune.audit.pii import mask_shown_data
from ragtune.core.cli import new_parser
from ragtune.core.redaction import REDACTED, command_line_secrets, redact_command_line, shown, shown_in

KNOWN = ["-h", "--help", "--hub_token", "--pii", "--output_dir"]
HF_KEY = "hf_" + "x1Y2" * 6


@pytest.fixture
def data_shown_as_is():
    """Each test starts and ends with no data masker (the audit of another test may have set one)."""
    mask_shown_data("off")
    yield
    mask_shown_data("off")


def test_values_of_unknown_and_secret_flags_are_redacted_others_kept():
    argv = ["--hub-token", "abc", "--output_dir", "out", "--hub_tokn=mysecret", "--hub_token", "t0k", "--pii", "warn",
            "--judge_api_key", "k1", "k2", "stray"]
    assert redact_command_line(argv, KNOWN) == [
        "--hub-token", REDACTED, "--output_dir", "out", f"--hub_tokn={REDACTED}", "--hub_token", REDACTED, "--pii",
        "warn", "--judge_api_key", REDACTED, REDACTED, REDACTED]
    assert command_line_secrets(argv, KNOWN) == ["abc", "mysecret", "t0k", "k1", "k2", "stray"]
    assert command_line_secrets(["positional", "--pii", "warn"], KNOWN) == []


def _parser():
    parser = new_parser("test")
    parser.add_argument("--hub_token", default=None)
    parser.add_argument("--hub_repo", default=None)
    parser.add_argument("--pii", choices=["warn", "off"], default="warn")
    parser.add_argument("--output_dir", default="out")
    return parser


@pytest.mark.parametrize("argv, secret, says", [
    (["--hub-token", HF_KEY], HF_KEY, "unrecognized arguments: --hub-token <redacted>; did you mean --hub_token?"),
    (["--hub_tokn", "mysecretvalue"], "mysecretvalue", "unrecognized arguments: --hub_tokn <redacted>"),
    ([f"--judge-api-key=sk-{'Ab1' * 8}"], "sk-" + "Ab1" * 8, "unrecognized arguments: --judge-api-key=<redacted>"),
    (["--pii", HF_KEY], HF_KEY, "argument --pii: invalid choice: '<redacted>'"),
    (["--hub_token", "plainsecret", "--pii", "plainsecret"], "plainsecret", "invalid choice: '<redacted>'"),
    (["--hub=plainsecret"], "plainsecret", "unrecognized arguments: --hub=<redacted>"),  # no abbreviations
])
def test_argparse_errors_are_one_line_exit_2_without_the_secret(argv, secret, says, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert secret not in output and says in output, output
    assert len(output.strip().splitlines()) == 1, output


def test_a_secret_from_the_environment_is_not_echoed(monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "envsecretvalue")
    with pytest.raises(SystemExit):
        _parser().parse_args(["--pii", "envsecretvalue"])
    assert "envsecretvalue" not in capsys.readouterr().err


def test_parsed_secret_flags_never_show_in_a_log_line(caplog, data_shown_as_is):
    _parser().parse_args(["--hub_token", "remembered-secret-123"])
    with caplog.at_level(logging.INFO):
        logging.getLogger("ragtune.test").info("token is %s", "remembered-secret-123")
    assert "remembered-secret-123" not in caplog.text and f"token is {REDACTED}" in caplog.text


def test_shown_texts_mask_personal_values_once_the_audit_says_so(caplog, data_shown_as_is):
    sentences = [sentence for sentence, _, _ in PLANTED]
    with pytest.raises(AssertionError):
        assert_nothing_leaks(shown(" ".join(sentences)))  # no masker yet: data shown as is
    mask_shown_data("warn")
    assert_nothing_leaks(shown(" ".join(sentences)))
    payload = shown_in({"dev_answers": [{"reference": s, "score": 0.5} for s in sentences], "rows": (sentences[1],)})
    assert payload["dev_answers"][0]["score"] == 0.5 and isinstance(payload["rows"], tuple)
    assert_nothing_leaks(repr(payload))
    with caplog.at_level(logging.INFO):
        for name in ("fine_tune_generator", "transformers.trainer"):  # any logger, ours or a library's
            logging.getLogger(name).info("One training example:\n%s", "\n".join(sentences))
    assert_nothing_leaks(caplog.text)
    assert "•" in caplog.text
    mask_shown_data("off")
    assert shown(sentences[1]) == sentences[1]


GUARDED_PROCESS = """
import sys, warnings
from ragtune.audit.pii import mask_shown_data
from ragtune.core.io import setup_logging
setup_logging()
mask_shown_data(sys.argv[1])
text = sys.argv[2]
warnings.warn("a library quotes its input: " + text)
raise ValueError("a bug quotes its input: " + text)
"""


@pytest.mark.parametrize("pii", ["warn", "off"])
def test_warnings_and_a_bug_traceback_mask_personal_values(pii):
    """A library's warning and a bug's traceback go through the same masking as log lines (one process each:
    pytest records warnings itself, and the traceback is the interpreter's)."""
    sentences = " ".join(sentence for sentence, _, _ in PLANTED)
    done = subprocess.run([sys.executable, "-c", GUARDED_PROCESS, pii, sentences], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    assert "UserWarning: a library quotes its input" in done.stderr
    assert "ValueError: a bug quotes its input" in done.stderr and "Traceback" in done.stderr
    if pii == "warn":
        assert_nothing_leaks(done.stderr)
    else:  # the masking is what hides them: off, they show
        assert PLANTED[0][2] in done.stderr

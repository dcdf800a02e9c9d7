"""The one place that keeps secrets and personal data out of what ragtune shows: files, model cards, logs, errors.

Secret flags are an explicit list (a flag like ``--judge_max_tokens`` is a number, not a secret):
their values are replaced by ``<redacted>`` (or stay ``None`` when not given, so a reader still sees
whether one was used). Inside any other string, a known secret value (the ones given on the
command line or in the environment) and anything shaped like a Hugging Face or OpenAI key is
replaced too: a token pasted into the wrong flag or a path is not written either.

What ragtune shows: every text that shows data or flags (log lines of every logger, model cards,
metrics.json, reports) goes through :func:`shown`: secrets redacted as above, and personal values
masked as the data audit says (``--pii warn``). Core cannot import the audit, so the audit hands its
masking in (:func:`set_data_masker`); log lines get it through a log-record factory installed once
(:func:`set_data_masker`, :func:`remember_secrets`), so that no logger, ours or a library's, is missed; Python
warnings and the traceback of an uncaught exception get it too.

argparse's own messages (an unknown or mistyped flag, an invalid choice) echo the command line:
:func:`scrub_command_line_message` keeps the values of the secret flags, of every flag the parser does
not know (``--hub-token hf_…``, ``--hub_tokn x``: a mistyped credential flag can be spelled any way,
and the value of an unknown flag is never needed to fix it), known secret values and key-shaped
strings out of them.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys
import traceback
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Callable, Collection, Iterable, Mapping, Sequence

REDACTED = "<redacted>"
# Every flag of every ragtune script whose value is a credential.
SECRET_FLAGS = frozenset({"hub_token", "judge_api_key", "generator_api_key"})
# Environment variables whose values are credentials ragtune may use.
SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY")
MIN_SECRET_LENGTH = 8
_KEY_SHAPES = re.compile(r"\bhf_[A-Za-z0-9]{16,}\b|\bsk-[A-Za-z0-9_-]{16,}")


def known_secrets(config: Any = None) -> list[str]:
    """Secret values to look for: the secret flags' values anywhere in ``config``, and the secret environment."""
    values = [os.environ.get(name) for name in SECRET_ENV]
    stack = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            values += [value for key, value in item.items() if key in SECRET_FLAGS]
            stack += list(item.values())
        elif isinstance(item, (list, tuple)):
            stack += list(item)
    return sorted({v for v in values if isinstance(v, str) and v.strip()}, key=len, reverse=True)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every known secret value and every key-shaped string replaced by ``<redacted>``."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return _KEY_SHAPES.sub(REDACTED, text)


def redact_config(config: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of ``config`` (flags, nested dicts and lists) safe to write: see the module docstring.

    ``secrets``: values to remove wherever they appear, besides those of the secret flags found in
    ``config`` and of the secret environment variables (:func:`known_secrets`).
    """
    values = sorted({*(s for s in secrets if s), *known_secrets(config)}, key=len, reverse=True)
    return _redact(config, values)


def _redact(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, Mapping):
        return {key: ((REDACTED if item else None) if key in SECRET_FLAGS else _redact(item, secrets))
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact(item, secrets) for item in value]
    if isinstance(value, str):
        return redact_text(value, secrets)
    return value


# ---------------------------------------------------------------------------- what ragtune shows


@dataclass
class _ShowPolicy:
    """How texts are shown in this process: the audit's data masker, and the secrets given on the command line."""

    mask: Callable[[str], str] | None = None
    secrets: set[str] = field(default_factory=set)
    log_guard: bool = False


_POLICY = _ShowPolicy()


def set_data_masker(masker: Callable[[str], str] | None) -> None:
    """Mask data with ``masker`` in every text shown from now on (None: data shown as it is).

    The data audit sets it (``ragtune.audit.pii.mask_shown_data``): its masking under ``--pii warn``.
    """
    _POLICY.mask = masker
    if masker is not None:
        _install_log_guard()


def remember_secrets(values: Iterable[Any]) -> None:
    """Secret values given on the command line: never shown from now on, in any text or log line.

    Values under ``MIN_SECRET_LENGTH`` characters are not credentials but placeholders (``EMPTY`` for a local
    vLLM server): replacing them everywhere would garble every log line.
    """
    _POLICY.secrets.update(v for v in values if isinstance(v, str) and len(v.strip()) >= MIN_SECRET_LENGTH)
    if _POLICY.secrets:
        _install_log_guard()


def shown(text: str) -> str:
    """``text`` as ragtune may show it (log, card, report): secrets redacted, personal values masked (--pii warn)."""
    text = redact_text(str(text), [*_POLICY.secrets, *known_secrets()])
    return _POLICY.mask(text) if _POLICY.mask is not None else text


def shown_in(value: Any) -> Any:
    """A copy of ``value`` (nested dicts, lists, tuples) with every string through :func:`shown`; keys and other
    values (numbers, objects) as they are: for JSON payloads and card data."""
    if isinstance(value, str):
        return shown(value)
    if isinstance(value, Mapping):
        return {key: shown_in(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shown_in(item) for item in value]
    if isinstance(value, tuple):
        return tuple(shown_in(item) for item in value)
    return value


def _install_log_guard() -> None:
    """Every log record's message through :func:`shown`, once per process, whatever logger or handler emits it.

    Python warnings are routed into logging (``logging.captureWarnings``) to get the same, and an uncaught
    exception's traceback is printed through :func:`shown` too: a library's warning or a bug's message can quote a
    query or a passage. The guard stays for the rest of the process (in a notebook, after ``main`` returns): it only
    ever hides more.
    """
    if _POLICY.log_guard:
        return
    _POLICY.log_guard = True
    logging.captureWarnings(True)
    sys.excepthook = _shown_traceback
    make_record = logging.getLogRecordFactory()

    def guarded_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed logging call: logging reports it when the record is handled
            return record
        record.msg, record.args = shown(message), None
        return record

    logging.setLogRecordFactory(guarded_record)


def _shown_traceback(kind: type[BaseException], value: BaseException, trace: TracebackType | None) -> None:
    sys.stderr.write(shown("".join(traceback.format_exception(kind, value, trace))))


# ---------------------------------------------------------------------------- argparse's messages

_FLAG = re.compile(r"^--?[A-Za-z]")


def _is_secret_flag(name: str, known_flags: Collection[str]) -> bool:
    """A secret flag of ragtune, or any flag this parser does not know (its value may be a mistyped credential's)."""
    return name not in known_flags or name.lstrip("-").replace("-", "_") in SECRET_FLAGS


def redact_command_line(argv: Sequence[str], known_flags: Collection[str]) -> list[str]:
    """``argv`` with the values of secret and unknown flags (``--flag value...`` and ``--flag=value``) redacted."""
    out, secret_values = [], False
    for item in argv:
        if _FLAG.match(item):
            name, eq, _ = item.partition("=")
            secret = _is_secret_flag(name, known_flags)
            out.append(f"{name}={REDACTED}" if secret and eq else item)
            secret_values = secret and not eq
        else:
            out.append(REDACTED if secret_values else item)
    return out


def command_line_secrets(argv: Sequence[str], known_flags: Collection[str]) -> list[str]:
    """The values :func:`redact_command_line` redacts."""
    secrets = []
    for item, redacted in zip(argv, redact_command_line(argv, known_flags)):
        if item != redacted:
            secrets.append(item.partition("=")[2] if _FLAG.match(item) else item)
    return [s for s in secrets if s]


def scrub_command_line_message(message: str, argv: Sequence[str], known_flags: Collection[str]) -> str:
    """One line of argparse's about ``argv``, without the values of secret or unknown flags, known secret values
    (the environment's, those remembered) and key-shaped strings."""
    for secret in sorted(set(command_line_secrets(argv, known_flags)), key=len, reverse=True):
        message = re.sub(rf"(?<![\w-]){re.escape(secret)}(?![\w-])", REDACTED, message)
    return " ".join(redact_text(message, [*_POLICY.secrets, *known_secrets()]).split())


def unknown_arguments_message(extras: Sequence[str], known_flags: Collection[str]) -> str:
    """argparse's "unrecognized arguments" line, with the unknown flags' values redacted and the closest known flag
    named (``--hub-token`` -> ``--hub_token``)."""
    message = "unrecognized arguments: " + " ".join(redact_command_line(extras, known_flags))
    flags = [item.partition("=")[0] for item in extras if _FLAG.match(item)]
    known = [flag for flag in known_flags if flag.startswith("--")]
    hints = []
    for flag in flags:
        close = difflib.get_close_matches(flag.replace("-", "_").replace("__", "--", 1), known, n=1, cutoff=0.75)
        if close and close[0] not in hints:
            hints.append(close[0])
    return message + (f"; did you mean {' or '.join(hints)}?" if hints else "")

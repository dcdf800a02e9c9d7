"""The one place that keeps secrets out of what ragtune writes: results.json, metrics.json, model cards, logs.

Secret flags are an explicit list (a flag like ``--judge_max_tokens`` is a number, not a secret):
their values are replaced by ``<redacted>`` (or stay ``None`` when not given, so a reader still sees
whether one was used). Inside any other string, a known secret value (the ones given on the
command line or in the environment) and anything shaped like a Hugging Face or OpenAI key is
replaced too: a token pasted into the wrong flag or a path is not written either.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable, Mapping

REDACTED = "<redacted>"
# Every flag of every ragtune script whose value is a credential.
SECRET_FLAGS = frozenset({"hub_token", "judge_api_key", "generator_api_key"})
# Environment variables whose values are credentials ragtune may use.
SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY")
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

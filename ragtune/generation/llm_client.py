"""A minimal OpenAI-compatible chat client: any server that speaks ``POST {base_url}/chat/completions``.

vLLM, Ollama, llama.cpp and OpenAI all do. urllib, not the ``openai`` package: one POST needs no
dependency. Connection errors, timeouts, 429 and 5xx are retried with exponential backoff; a server
that stays down, refuses the request or does not speak the protocol raises :class:`EndpointError`
(a :class:`UserError`: one line, exit 2).

In the generation layer because a generator may be such a server (the RAG pipeline's, so evaluate_rag.py's and
predict_rag.py's); the evaluation's LLM judge uses it too.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request

from ragtune.core.errors import UserError
from ragtune.generation.prompt import Messages

__all__ = ["EndpointError", "Messages", "OpenAIChatClient", "chat_url", "excerpt", "openai_key_for"]


def excerpt(text: str, limit: int = 120) -> str:
    """One line of at most ``limit`` characters, for messages."""
    text = re.sub(r"\s+", " ", text).strip()
    return text[:limit] + ("..." if len(text) > limit else "")


class EndpointError(UserError):
    """The LLM server cannot be used (down, refusing, not OpenAI-compatible)."""


def openai_key_for(base_url: str | None) -> str | None:
    """$OPENAI_API_KEY, but only for OpenAI's own API: never leak it to a third-party or local server."""
    host = urllib.parse.urlparse(base_url or "").hostname or ""
    return os.environ.get("OPENAI_API_KEY") if host == "api.openai.com" else None


def chat_url(base_url: str) -> str:
    """``http://host:8000`` -> ``http://host:8000/v1/chat/completions``; a base URL with a path is kept."""
    base = base_url.strip().rstrip("/")
    parsed = urllib.parse.urlparse(base)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"not an http(s) URL: {base_url!r}")
    if base.endswith("/chat/completions"):
        return base
    if parsed.path in ("", "/"):
        base += "/v1"
    return base + "/chat/completions"


class OpenAIChatClient:
    """Minimal OpenAI chat-completions client over urllib (no extra dependency), with retries and backoff."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, flag: str = "--judge_base_url",
                 timeout: float = 120.0, retries: int = 3, backoff: float = 1.0) -> None:
        self.flag = flag
        try:
            self.url = chat_url(base_url)
        except ValueError as err:
            raise UserError(f"{flag}: {err}") from None
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff

    def complete(self, messages: Messages, max_tokens: int = 512, temperature: float = 0.0) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": temperature,
                           "max_tokens": max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as err:
                detail = excerpt(err.read().decode("utf-8", "replace"))
                if err.code == 429 or err.code >= 500:
                    problem = f"HTTP {err.code} {detail}"
                    continue
                raise EndpointError(f"{self.flag} {self.url} refused the request for model '{self.model}': "
                                    f"HTTP {err.code} {detail}") from None
            except (urllib.error.URLError, OSError) as err:  # refused, DNS, timeout, reset
                reason = getattr(err, "reason", err)
                problem = f"cannot connect ({reason})"
                continue
            try:
                payload = json.loads(raw.decode("utf-8"))
                content = payload["choices"][0]["message"].get("content")
            except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                problem = f"the answer is not an OpenAI chat completion: {excerpt(raw.decode('utf-8', 'replace'))}"
                continue
            return content if isinstance(content, str) else ""
        raise EndpointError(f"{self.flag} {self.url}: {problem} after {self.retries + 1} attempt(s)")

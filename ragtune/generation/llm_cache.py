"""LLM answers cached on disk: a rerun, or another system needing the same judgement, sends nothing.

Every prompt is sent at temperature 0 and its raw answer stored in a JSONL file keyed by
sha256(model, messages, parameters).
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

from ragtune.generation.prompt import Messages


class LLMCache:
    """Raw answers on disk, one JSON line per prompt, appended as they arrive (a crash loses nothing)."""

    def __init__(self, path: Path | None) -> None:
        self.path = Path(path) if path else None
        self.entries: dict[str, str] = {}
        self._lock = threading.Lock()
        if self.path is not None and self.path.exists():
            with open(self.path, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        record = json.loads(line)
                        self.entries[record["key"]] = record["response"]
                    except (ValueError, KeyError, TypeError):
                        continue  # a line cut short by a crash

    @staticmethod
    def key(model: str, messages: Messages, params: dict[str, Any]) -> str:
        payload = json.dumps({"model": model, "messages": messages, "params": params}, sort_keys=True,
                             ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()

    def get(self, key: str) -> str | None:
        return self.entries.get(key)

    def put(self, key: str, response: str, meta: dict[str, Any]) -> None:
        with self._lock:
            self.entries[key] = response
            if self.path is None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"key": key, **meta, "response": response}, ensure_ascii=False) + "\n")


class CachedLLM:
    """An LLM whose answers are looked up in the cache before any call."""

    def __init__(self, client: Any, cache: LLMCache, max_tokens: int = 512) -> None:
        self.client = client
        self.cache = cache
        self.max_tokens = max_tokens
        self.cache_hits = 0
        self.requests = 0
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return getattr(self.client, "model_id", None) or self.client.model

    def ask(self, messages: Messages, kind: str = "") -> str:
        params = {"temperature": 0.0, "max_tokens": self.max_tokens}
        key = LLMCache.key(self.model_id, messages, params)
        cached = self.cache.get(key)
        if cached is not None:
            with self._lock:
                self.cache_hits += 1
            return cached
        with self._lock:
            self.requests += 1
        answer = self.client.complete(messages, max_tokens=self.max_tokens, temperature=0.0)
        self.cache.put(key, answer, {"model": self.model_id, "kind": kind})
        return answer

"""A scripted OpenAI-compatible chat server on 127.0.0.1 for the judge and generator tests.

``FakeOpenAI(responder)`` answers ``POST /v1/chat/completions`` with ``responder(messages)``: a string
(the assistant's content), or ``(status, body)`` for an HTTP error or a non-OpenAI body. It counts
calls, so a test can assert that a rerun made none. The default responder plays a well-behaved judge
and generator for every prompt kind that ragtune sends.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Union

from ragtune.generation.prompt import DEFAULT_SYSTEM_PROMPT

Reply = Union[str, tuple[int, str]]


def prompt_kind(messages: list[dict]) -> str:
    """Which ragtune prompt this is, from its first user message."""
    system = messages[0]["content"] if messages else ""
    user = next((m["content"] for m in messages if m["role"] == "user"), "")
    if system == DEFAULT_SYSTEM_PROMPT or user.startswith(("Ngữ cảnh:", "Câu hỏi:")):  # ragtune.generation.prompt
        return "generate"
    if '"verdict"' in user:
        return "precision"
    if '"attributed"' in user:
        return "recall"
    if '"present"' in user:
        return "present"
    if '{"entities"' in user:
        return "entities"
    if '"supported_by"' in user:
        return "noise"
    if '"supported"' in user:
        return "groundedness"
    if '"questions"' in user:
        return "relevancy"
    return "unknown"


def _field(user: str, label: str) -> str:
    match = re.search(rf"^{label}: (.*)$", user, re.M)
    return match.group(1) if match else ""


def default_responder(messages: list[dict]) -> Reply:
    """Deterministic, plausible answers: a context is useful when it shares a long word with the reference."""
    kind = prompt_kind(messages)
    user = next((m["content"] for m in messages if m["role"] == "user"), "")
    if kind == "generate":
        question = _field(user, "Question")
        return f"Trả lời: {question}"
    if kind == "precision":
        reference = _field(user, "Reference answer") or _field(user, "Question")
        context = _field(user, "Context")
        words = {w for w in re.findall(r"\w+", reference.lower()) if len(w) >= 5}
        useful = int(any(w in context.lower() for w in words))
        return f'```json\n{{"reason": "compared", "verdict": {useful}}}\n```'
    if kind == "recall":
        return '{"attributed": [1]}'
    if kind == "entities":
        return '{"entities": ["RAIC", "CLB"]}'
    if kind == "present":
        return '{"present": [2]}'
    if kind == "groundedness":
        return '{"claims": [{"claim": "a", "supported": 1}, {"claim": "b", "supported": 0}]}'
    if kind == "relevancy":
        question = _field(user, "Answer").removeprefix("Trả lời: ")
        return json.dumps({"questions": [question, question, "Câu hỏi khác?"], "noncommittal": 0},
                          ensure_ascii=False)
    if kind == "noise":
        return '{"claims": [{"claim": "a", "correct": 0, "supported_by": [1]}, {"claim": "b", "correct": 1, ' \
               '"supported_by": []}]}'
    return "?"


class FakeOpenAI:
    def __init__(self, responder: Callable[[list[dict]], Reply] = default_responder) -> None:
        self.responder = responder
        self.calls = 0
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.calls += 1
                    server.requests.append({"path": self.path, "body": body,
                                            "authorization": self.headers.get("Authorization")})
                if not self.path.endswith("/chat/completions"):
                    return self._send(404, json.dumps({"error": {"message": "not found"}}))
                reply = server.responder(body.get("messages", []))
                if isinstance(reply, tuple):
                    return self._send(*reply)
                payload = {"id": "fake", "object": "chat.completion", "model": body.get("model"),
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": reply}}]}
                self._send(200, json.dumps(payload, ensure_ascii=False))

            def _send(self, status: int, text: str):
                data = text.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def kinds(self) -> list[str]:
        return [prompt_kind(r["body"].get("messages", [])) for r in self.requests]

    def reset(self) -> None:
        with self._lock:
            self.calls = 0
            self.requests.clear()

    def __enter__(self) -> "FakeOpenAI":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/v1"

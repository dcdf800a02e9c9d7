"""A loopback fake of the Hugging Face Hub's write API, for testing uploads with the real client.

It answers the calls ``huggingface_hub`` 2.4 makes to create a repo and commit files, as the client
sends them:

- ``POST /api/repos/create``: JSON ``{"name", "organization", "visibility" | "private", "type"}``; 409 if it exists
- ``GET /api/models/{repo}`` and ``GET /api/models/{repo}/revision/{rev}``: repo info (``private``, ``sha``, files)
- ``POST /api/validate-yaml``: JSON ``{"content", "repoType"}``; 400 if the README's YAML block does not parse
- ``POST /api/models/{repo}/preupload/{rev}``: answers ``uploadMode: "regular"`` for every file (no LFS/Xet),
  with the git blob oid of files already in the repo (so unchanged files are skipped, as on the Hub)
- ``POST /api/models/{repo}/commit/{rev}``: NDJSON lines ``{"key": "header" | "file" | "deletedFile", "value"}``,
  file contents base64
- ``GET /api/agent-harnesses``: the registry the client's user-agent telemetry fetches (unauthenticated, at most
  once a day per ``HF_HOME``; not sent with ``HF_HUB_DISABLE_TELEMETRY=1``)

Every request is recorded (method, path, query, headers, body); requests it does not know are recorded in
``unknown`` and answered 404. ``fail(status, times, path_contains)`` makes it answer an error instead, and
``token`` makes it answer 401 to any other bearer token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

REPO = r"(?P<repo>[^/]+/[^/]+)"
REV = r"(?P<rev>[^/?]+)"
ROUTES = [
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("POST", re.compile(rf"^/api/models/{REPO}/preupload/{REV}$"), "preupload"),
    ("POST", re.compile(rf"^/api/models/{REPO}/commit/{REV}$"), "commit"),
    ("GET", re.compile(rf"^/api/models/{REPO}(?:/revision/{REV})?$"), "repo_info"),
    # huggingface_hub's user-agent telemetry fetches this registry (unauthenticated) once a day per HF_HOME.
    ("GET", re.compile(r"^/api/agent-harnesses$"), "agent_harnesses"),
]
PUBLIC_ROUTES = {"agent_harnesses"}
YAML_BLOCK = re.compile(r"^\s*---\r?\n([\s\S]*?)\r?\n---[ \t]*(?:\r?\n|$)")


def git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    route: str | None = None
    status: int | None = None

    def json(self):
        return json.loads(self.body)


@dataclass
class Repo:
    repo_id: str
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[dict] = field(default_factory=list)

    @property
    def sha(self) -> str:
        return self.commits[-1]["oid"] if self.commits else "0" * 40


@dataclass
class _Failure:
    status: int
    times: int | None
    path_contains: str | None


class FakeHub:
    """``with FakeHub() as hub: ...`` serves on ``hub.url`` (127.0.0.1, a free port) in a thread."""

    def __init__(self, token: str | None = None, default_namespace: str = "user") -> None:
        self.token = token
        self.default_namespace = default_namespace
        self.requests: list[Request] = []
        self.unknown: list[Request] = []
        self.repos: dict[str, Repo] = {}
        self._failures: list[_Failure] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------- lifecycle

    def start(self) -> "FakeHub":
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _handle(self) -> None:
                hub._dispatch(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start the server first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -------------------------------------------------------------- test controls

    def fail(self, status: int, times: int | None = None, path_contains: str | None = None) -> None:
        """Answer ``status`` to the next ``times`` requests (all of them if None) whose path contains the text."""
        with self._lock:
            self._failures.append(_Failure(status, times, path_contains))

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def routed(self, route: str) -> list[Request]:
        return [r for r in self.requests if r.route == route]

    def committed_files(self, repo_id: str) -> dict[str, bytes]:
        return dict(self.repos[repo_id].files)

    # -------------------------------------------------------------- plumbing

    def _dispatch(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        split = urlsplit(handler.path)
        request = Request(handler.command, unquote(split.path), parse_qs(split.query),
                          {k: v for k, v in handler.headers.items()}, body)
        for method, pattern, name in ROUTES:
            match = pattern.match(request.path)
            if match and method == request.method:
                request.route = name
                params = match.groupdict()
                break
        else:
            params = {}
        with self._lock:
            self.requests.append(request)
            if request.route is None:
                self.unknown.append(request)
            failure = self._take_failure(request)
        if failure is not None:
            status, payload, headers = failure, {"error": f"fake hub: forced HTTP {failure}"}, {}
            if failure == 401:
                payload = {"error": "Invalid credentials in Authorization header"}
                headers = {"X-Error-Message": "Invalid credentials in Authorization header"}
        elif (self.token is not None and request.route not in PUBLIC_ROUTES
              and handler.headers.get("Authorization") != f"Bearer {self.token}"):
            status, payload = 401, {"error": "Invalid credentials in Authorization header"}
            headers = {"X-Error-Message": "Invalid credentials in Authorization header"}
        elif request.route is None:
            status, payload, headers = 404, {"error": f"fake hub: no route for {request.method} {request.path}"}, {}
        else:
            try:
                status, payload, headers = getattr(self, "_" + request.route)(request, **params)
            except Exception as err:  # noqa: BLE001 - a test server: report the bug to the client
                status, payload, headers = 500, {"error": f"fake hub bug: {err!r}"}, {}
        request.status = status
        self._respond(handler, status, payload, headers)

    def _take_failure(self, request: Request) -> int | None:
        for failure in self._failures:
            if failure.path_contains is not None and failure.path_contains not in request.path:
                continue
            if failure.times is not None:
                if failure.times <= 0:
                    continue
                failure.times -= 1
            return failure.status
        return None

    @staticmethod
    def _respond(handler: BaseHTTPRequestHandler, status: int, payload, headers: dict) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data)

    def _repo_or_404(self, repo_id: str):
        repo = self.repos.get(repo_id)
        if repo is None:
            return None, (404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        return repo, None

    # -------------------------------------------------------------- endpoints

    def _create_repo(self, request: Request):
        payload = request.json()
        namespace = payload.get("organization") or self.default_namespace
        repo_id = f"{namespace}/{payload['name']}"
        if "visibility" in payload:
            private = payload["visibility"] == "private"
        else:
            private = bool(payload.get("private", False))
        url = f"{self.url}/{repo_id}"
        with self._lock:
            if repo_id in self.repos:
                return 409, {"error": "You already created this model repo", "url": url}, {}
            self.repos[repo_id] = Repo(repo_id, private)
        return 200, {"url": url, "name": repo_id, "id": "fake-" + hashlib.md5(repo_id.encode()).hexdigest()}, {}

    def _repo_info(self, request: Request, repo: str, rev: str | None = None):
        found, error = self._repo_or_404(repo)
        if error:
            return error
        return 200, {"id": found.repo_id, "modelId": found.repo_id, "private": found.private, "sha": found.sha,
                     "siblings": [{"rfilename": name} for name in sorted(found.files)]}, {}

    def _agent_harnesses(self, request: Request):
        return 200, {"standardEnvVars": [], "harnesses": {}}, {}

    def _validate_yaml(self, request: Request):
        content = request.json().get("content", "")
        match = YAML_BLOCK.match(content)
        if match is None:
            return 200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata in repo card"}]}, {}
        try:
            metadata = yaml.safe_load(match.group(1))
        except yaml.YAMLError as err:
            return 400, {"errors": [{"message": f"invalid YAML: {err}"}], "warnings": []}, {}
        if not isinstance(metadata, dict):
            return 400, {"errors": [{"message": "metadata must be a mapping"}], "warnings": []}, {}
        return 200, {"errors": [], "warnings": []}, {}

    def _preupload(self, request: Request, repo: str, rev: str):
        found, error = self._repo_or_404(repo)
        if error:
            return error
        files = []
        for entry in request.json()["files"]:
            existing = found.files.get(entry["path"])
            files.append({"path": entry["path"], "uploadMode": "regular", "shouldIgnore": False,
                          "oid": git_blob_oid(existing) if existing is not None else None})
        return 200, {"files": files, "commitOid": found.sha}, {}

    def _commit(self, request: Request, repo: str, rev: str):
        found, error = self._repo_or_404(repo)
        if error:
            return error
        header, changes, deletions = None, {}, []
        for line in request.body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            if item["key"] == "header":
                header = item["value"]
            elif item["key"] == "file":
                value = item["value"]
                if value.get("encoding") != "base64":
                    return 400, {"error": "fake hub: only base64 file content is supported"}, {}
                changes[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] in ("deletedFile", "deletedFolder"):
                deletions.append(item["value"]["path"])
            else:
                return 400, {"error": f"fake hub: unsupported commit line {item['key']!r} (LFS/Xet not faked)"}, {}
        if header is None:
            return 400, {"error": "commit without header"}, {}
        with self._lock:
            for path in deletions:
                found.files = {k: v for k, v in found.files.items() if k != path and not k.startswith(path + "/")}
            found.files.update(changes)
            oid = hashlib.sha1(f"{found.sha}{len(found.commits)}{sorted(changes)}".encode()).hexdigest()
            found.commits.append({"oid": oid, "header": header, "files": sorted(changes), "deleted": deletions,
                                  "revision": rev})
        return 200, {"success": True, "commitOid": oid, "commitUrl": f"{self.url}/{repo}/commit/{oid}"}, {}


def main() -> None:
    """``python tests/hub_server.py``: serve until Ctrl-C, printing the URL (to try the client by hand)."""
    import time

    with FakeHub() as hub:
        print(hub.url, flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()

"""A local page to ask the RAG system questions: the answer, the passages it retrieved and every stage's score.

    python -m ragtune.app --from outputs/eval --system best --host 127.0.0.1 --port 7860

--from DIR --system NAME runs a system exactly as evaluate_rag.py evaluated it in DIR (predict_rag.py's rebuild,
ragtune.pipeline.RAGPipeline); the page switches between every system of that evaluation, sharing the
models they have in common. Without --from, name the models as predict_rag.py takes them (--embedding_model,
--reranker_model, --generator_local ...). The page binds 127.0.0.1 by default: it is for you, not the network.

Web stack: Python's own http.server with one plain HTML page (inline style and script, nothing fetched) and a
JSON endpoint. No dependency to install, and it serves as soon as the models are loaded; a page with one form
needs neither a framework (Starlette/FastAPI would add uvicorn and a dozen packages) nor Gradio (hundreds of MB,
seconds of import, and assets loaded from the network).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import threading
import time
from dataclasses import asdict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Sequence

from ragtune.audit.pii import mask_shown_data
from ragtune.core.cli import new_parser
from ragtune.core.errors import UserError, run_main
from ragtune.core.expansions import load_expansions
from ragtune.core.io import setup_logging
from ragtune.core.redaction import shown
from ragtune.pipeline import Passage, RAGPipeline
from ragtune.pipeline.arguments import (
    add_generator_args,
    add_run_args,
    add_system_args,
    check_pipeline_paths,
    validate_pipeline_args,
)
from ragtune.pipeline.spec import read_evaluation
from ragtune.predict import build_pipeline

logger = logging.getLogger("ragtune.app")

MAX_QUESTION_CHARS = 2000
MAX_K = 50
BAD_REQUEST = "send a JSON object {question, system, k}"


# ---------------------------------------------------------------------------- flags


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
    parser.prog = "python -m ragtune.app"
    server = parser.add_argument_group("the page")
    server.add_argument("--host", default="127.0.0.1",
                        help="Address to listen on. 127.0.0.1: this machine only; 0.0.0.0 opens it to your network.")
    server.add_argument("--port", type=int, default=7860, help="Port (0: any free port; the address is logged).")
    server.add_argument("--pii", choices=("warn", "off"), default="warn",
                        help="warn: personal values (phones, e-mails, ID and account numbers, birth dates) in the "
                             "passages and answers are masked on the page, as in every report; off: shown as they "
                             "are.")
    server.add_argument("--k", type=int, default=5, help="Passages retrieved per question (and given to the "
                                                         "generator); the page can change it.")
    add_system_args(parser)  # the same system and generator flags as predict_rag.py
    add_generator_args(parser, workers=1)
    add_run_args(parser, cache_help="Embeddings and reranker scores kept across starts (default: a temporary folder).")
    return parser


def validate_args(args: argparse.Namespace) -> None:
    """Every flag checked before a model is loaded."""
    validate_pipeline_args(args)
    if args.k > MAX_K:
        raise UserError(f"--k must be at most {MAX_K}, got {args.k}")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be in 0..65535, got {args.port}")
    check_pipeline_paths(args, outputs=("cache_dir",))


# ---------------------------------------------------------------------------- the systems behind the page


class AskService:
    """The systems the page switches between, over one set of models and indexes, answering one question at a
    time (the models are not shared safely between threads; the page serves while one question is answered)."""

    def __init__(self, first: RAGPipeline, specs: dict[str, Any], default_k: int) -> None:
        self.pipelines = {first.name: first}
        self.specs = specs  # name -> SystemSpec of the other systems, built when first asked
        self.order = list(specs) if first.name in specs else [first.name, *specs]  # the evaluation's order
        self.current = first.name
        self.default_k = default_k
        self.lock = threading.Lock()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AskService:
        first = build_pipeline(args)
        specs: dict[str, Any] = {}
        if args.from_dir:
            evaluation = read_evaluation(args.from_dir)
            explicit = load_expansions(args.expansions) if args.expansions else None
            specs = {spec.name: spec.with_expansions(explicit) if explicit else spec for spec in evaluation.systems}
        return cls(first, specs, args.k)

    def pipeline(self, name: str | None) -> RAGPipeline:
        name = name or self.current
        if name not in self.pipelines:
            if name not in self.specs:
                raise UserError(f"unknown system {name!r}; the systems: {', '.join(self.order)}")
            first = self.pipelines[self.current]
            self.pipelines[name] = RAGPipeline(self.specs[name], first.parts, first.generator)
        return self.pipelines[name]

    def describe(self) -> dict[str, Any]:
        first = self.pipelines[self.current]
        return {"systems": self.order, "current": self.current, "k": self.default_k,
                "generator": first.generator is not None, "passages": len(first.corpus)}

    def ask(self, question: str, system: str | None = None, k: int | None = None) -> dict[str, Any]:
        """The top ``k`` passages (and the answer, with a generator) of ``question`` by ``system``."""
        question = question.strip()
        if not question:
            raise UserError("the question is empty")
        if len(question) > MAX_QUESTION_CHARS:
            raise UserError(f"the question is longer than {MAX_QUESTION_CHARS} characters")
        if system is not None and not isinstance(system, str):
            raise UserError(f"system must be a system's name, got {system!r}")
        if k is None:
            k = self.default_k
        elif isinstance(k, bool) or not isinstance(k, (int, str)) or not str(k).strip().isdigit():
            raise UserError(f"k must be a whole number of passages, got {k!r}")
        k = int(k)
        if not 1 <= k <= MAX_K:
            raise UserError(f"k must be in 1..{MAX_K}, got {k}")
        started = time.perf_counter()
        with self.lock:
            pipeline = self.pipeline(system)
            passages = pipeline.retrieve(question, k)
            answer = (pipeline.answer_batch([question], k, [passages])[0].answer
                      if pipeline.generator is not None else None)
        seconds = round(time.perf_counter() - started, 2)
        logger.info("%s: %d passages%s in %.2fs", pipeline.name, len(passages), " and an answer" if answer else "",
                    seconds)
        return {"system": pipeline.name, "k": k, "answer": shown(answer) if answer is not None else None,
                "passages": [passage_record(p) for p in passages], "seconds": seconds}


def passage_record(passage: Passage) -> dict[str, Any]:
    """A passage as the page shows it (scores that are not finite, such as below a reranked head, as null)."""
    record = asdict(passage)
    record["text"] = shown(passage.text)
    record["score"] = _finite(passage.score)
    record["stage_scores"] = {name: _finite(value) for name, value in passage.stage_scores.items()}
    return record


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


# ---------------------------------------------------------------------------- HTTP


def make_handler(service: AskService) -> type[BaseHTTPRequestHandler]:
    """The request handler: GET / (the page), GET /api/systems, POST /api/ask {question, system, k}."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "ragtune-app"

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path in ("/", "/index.html"):
                self.send(HTTPStatus.OK, PAGE.encode("utf-8"), "text/html; charset=utf-8")
            elif self.path == "/api/systems":
                self.send_json(HTTPStatus.OK, service.describe())
            else:
                self.send_json(HTTPStatus.NOT_FOUND, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/api/ask":
                self.send_json(HTTPStatus.NOT_FOUND, {"error": "not found"})
                return
            try:
                request = self.read_request()
                result = service.ask(str(request.get("question") or ""), request.get("system"), request.get("k"))
            except UserError as err:
                self.send_json(HTTPStatus.BAD_REQUEST, {"error": shown(str(err))})
                return
            except Exception as err:  # noqa: BLE001 - the page says what failed; the server keeps serving
                logger.exception("answering failed")
                self.send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": shown(f"{type(err).__name__}: {err}")})
                return
            self.send_json(HTTPStatus.OK, result)

        def read_request(self) -> dict[str, Any]:
            """The request's JSON object; anything else is the sender's error."""
            try:
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(min(length, 64 * 1024)) or b"{}")
            except ValueError as err:  # int's and json's errors (UnicodeDecodeError included)
                raise UserError(BAD_REQUEST) from err
            if not isinstance(request, dict):
                raise UserError(BAD_REQUEST)
            return request

        def send_json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
            self.send(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"), "application/json")

        def send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            logger.debug("%s %s", self.address_string(), format % args)

    return Handler


def listen(host: str, port: int) -> ThreadingHTTPServer:
    """A server bound to ``host:port``, not yet serving (its handler is set once the models are loaded): a port in
    use is a user error found before minutes of model loading, not after."""
    try:
        server = ThreadingHTTPServer((host, port), BaseHTTPRequestHandler)
    except OSError as err:
        raise UserError(f"--host {host} --port {port}: cannot listen there ({err.strerror or err})") from err
    server.daemon_threads = True
    return server


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=("sentence_transformers", "transformers"))
    validate_args(args)
    mask_shown_data(args.pii)
    server = listen(args.host, args.port)
    try:
        if args.cache_dir:
            Path(args.cache_dir).mkdir(parents=True, exist_ok=True)
        service = AskService.from_args(args)
        first = service.pipeline(None)
        first.check_generator("warm-up")  # a generator that cannot answer fails now, in one line
        first.retrieve("warm-up", 1)  # models loaded and the corpus encoded before the first question
        server.RequestHandlerClass = make_handler(service)
        host, port = server.server_address[:2]
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            logger.warning("--host %s: the page is reachable from other machines on your network", args.host)
        logger.info("Serving %s (%d systems) on http://%s:%d/ (Ctrl-C stops)", first.name, len(service.order),
                    host, port)
        server.serve_forever()
    finally:
        server.server_close()
    return 0


# ---------------------------------------------------------------------------- the page

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Ask the RAG system</title><style>
*{box-sizing:border-box}body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1b}
main{max-width:900px;margin:auto;padding:12px}h1{font-size:1.3em}form{display:grid;gap:8px}
textarea{width:100%;min-height:4.5em;font:inherit;padding:6px}.row{display:flex;flex-wrap:wrap;gap:8px 16px;
align-items:center}select{max-width:100%;font:inherit}input[type=number]{width:4.5em;font:inherit}
button{font:inherit;padding:6px 18px;cursor:pointer}#status{color:#666;font-size:.9em}#error{color:#b71c1c}
#answer{white-space:pre-wrap;background:#eef7ee;border-radius:6px;padding:8px;margin:8px 0}
ol#passages{list-style:none;padding:0}ol#passages li{border:1px solid #ddd;border-radius:6px;padding:6px 8px;margin:6px 0}
.pid{font-weight:600}.scores{font-size:.8em;color:#555}.scores span{display:inline-block;background:#f2f2f2;
border-radius:8px;padding:0 6px;margin:2px 4px 2px 0}.text{white-space:pre-wrap;font-size:.9em;max-height:12em;overflow:auto}
</style></head><body><main>
<h1>Ask the RAG system</h1>
<form id="ask">
<label for="question">Question</label>
<textarea id="question" name="question" required maxlength="2000"></textarea>
<div class="row"><label>System <select id="system" name="system"></select></label>
<label>Passages <input type="number" id="k" name="k" min="1" max="50"></label>
<button type="submit" id="submit">Ask</button><span id="status"></span></div>
</form>
<p id="error" role="alert"></p>
<section id="result" hidden><h2>Answer</h2><div id="answer"></div>
<h2>Retrieved passages</h2><p id="meta" class="scores"></p><ol id="passages"></ol></section>
</main><script>
(function(){
const $=id=>document.getElementById(id);
const el=(tag,cls,text)=>{const e=document.createElement(tag); if(cls) e.className=cls;
  if(text!==undefined) e.textContent=String(text); return e;};
const fmt=v=>v===null||v===undefined?'–':Number(v).toFixed(4);
fetch('/api/systems').then(r=>r.json()).then(info=>{
  info.systems.forEach(name=>{const o=el('option',null,name); o.value=name; o.selected=name===info.current;
    $('system').append(o);});
  $('k').value=info.k; $('answer').dataset.generator=info.generator;
  $('status').textContent=info.passages+' passages'+(info.generator?'':' (no generator: retrieval only)');});
$('ask').addEventListener('submit',ev=>{ev.preventDefault(); $('error').textContent='';
  $('status').textContent='thinking…'; $('submit').disabled=true;
  fetch('/api/ask',{method:'POST',headers:{'Content-Type':'application/json'},body:JSON.stringify(
    {question:$('question').value,system:$('system').value,k:Number($('k').value)})})
  .then(r=>r.json().then(body=>({ok:r.ok,body})))
  .then(({ok,body})=>{if(!ok) throw new Error(body.error||'failed'); show(body);})
  .catch(err=>{$('error').textContent=err.message; $('status').textContent='';})
  .finally(()=>{$('submit').disabled=false;});});
function show(r){
  $('result').hidden=false;
  $('answer').textContent=r.answer===null?'(no generator: retrieval only)':r.answer;
  $('meta').textContent=r.system+' · top '+r.k+' · '+r.seconds+' s';
  const list=$('passages'); list.replaceChildren();
  r.passages.forEach(p=>{const li=el('li'); li.dataset.pid=p.id;
    const head=el('div'); head.append(el('span',null,p.rank+'. '),el('span','pid',p.id));
    const scores=el('div','scores'); scores.append(el('span','final','score '+fmt(p.score)));
    Object.entries(p.stage_scores).forEach(([name,v])=>scores.append(el('span','stage',name+' '+fmt(v))));
    li.append(head,scores,el('div','text',p.text)); list.append(li);});
  $('status').textContent='';}
})();
</script></body></html>
"""


if __name__ == "__main__":
    run_main(main)

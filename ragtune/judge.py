"""LLM calls for evaluation: an OpenAI-compatible client, a disk cache, robust parsing, and the judged metrics.

Any server that speaks ``POST {base_url}/chat/completions`` works: vLLM, Ollama, llama.cpp, OpenAI.

Reproducibility and cost. Every prompt is sent at temperature 0 and its raw answer is stored in a
JSONL file keyed by sha256(model, messages, parameters); a rerun (or another system that needs
the same judgement) reads it back and sends nothing. Judgements are made per (query, passage),
not per (system, k): a passage retrieved by five systems at ranks 2, 3 and 6 is judged once, and
every system's context precision/recall at every k is computed from those verdicts.

Failures. An answer that cannot be parsed is asked again once, with a reminder of the format;
if that also fails, the judgement is counted in ``failures`` and the queries that needed it are
left out of that metric's mean (and counted), never scored 0. A server that is down, answers
5xx/429 after retries, or does not speak the protocol raises :class:`EndpointError` (a
:class:`UserError`: one line, exit 2).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import UserError
from .evaluation import rank_weighted_precision

logger = logging.getLogger(__name__)

Messages = list[dict[str, str]]


class EndpointError(UserError):
    """The LLM server cannot be used (down, refusing, not OpenAI-compatible)."""


class ParseError(ValueError):
    """The model's answer does not have the requested format."""


# ---------------------------------------------------------------------------- client


def openai_key_for(base_url: str | None) -> str | None:
    """$OPENAI_API_KEY, but only for OpenAI's own API: never leak it to a third-party or local server."""
    import os

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
        self.calls = 0
        self._lock = threading.Lock()

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
            with self._lock:
                self.calls += 1
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as err:
                detail = _excerpt(err.read().decode("utf-8", "replace"))
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
                problem = f"the answer is not an OpenAI chat completion: {_excerpt(raw.decode('utf-8', 'replace'))}"
                continue
            return content if isinstance(content, str) else ""
        raise EndpointError(f"{self.flag} {self.url}: {problem} after {self.retries + 1} attempt(s)")


def _excerpt(text: str, limit: int = 120) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text[:limit] + ("..." if len(text) > limit else "")


# ---------------------------------------------------------------------------- cache


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


# ---------------------------------------------------------------------------- parsing


_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
_YES = {"1", "yes", "true", "y", "có", "co", "useful", "relevant", "supported"}
_NO = {"0", "no", "false", "n", "không", "khong", "not useful", "irrelevant", "unsupported"}


def _strip(text: str) -> str:
    text = _THINK.sub("", text or "")
    if "</think>" in text:  # an unterminated think block's end
        text = text.split("</think>")[-1]
    return text.strip()


def extract_json(text: str) -> Any:
    """The JSON value in a model's answer: bare, inside a code fence, or the first balanced {...}/[...]."""
    text = _strip(text)
    candidates = [m.group(1).strip() for m in _FENCE.finditer(text)] + [text]
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            pass
        for opener, closer in (("{", "}"), ("[", "]")):
            start = candidate.find(opener)
            while start != -1:
                depth, in_str, escape = 0, False, False
                for pos in range(start, len(candidate)):
                    ch = candidate[pos]
                    if in_str:
                        escape = ch == "\\" and not escape
                        if ch == '"' and not escape:
                            in_str = False
                        elif ch != "\\":
                            escape = False
                        continue
                    if ch == '"':
                        in_str = True
                    elif ch == opener:
                        depth += 1
                    elif ch == closer:
                        depth -= 1
                        if depth == 0:
                            try:
                                return json.loads(candidate[start:pos + 1])
                            except ValueError:
                                break
                start = candidate.find(opener, start + 1)
    raise ParseError(f"no JSON in {_excerpt(text, 80)!r}")


def _as_flag(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip().lower().strip(".!\"'") in _YES:
        return 1
    if isinstance(value, str) and value.strip().lower().strip(".!\"'") in _NO:
        return 0
    raise ParseError(f"not a 0/1 verdict: {value!r}")


def parse_verdict(text: str) -> int:
    """A 0/1 verdict from JSON ({"verdict": 1}, {"verdict": "yes"}) or a bare "1"/"0"/"yes"/"no"."""
    body = _strip(text)
    try:
        value = extract_json(body)
    except ParseError:
        value = None
    if isinstance(value, dict):
        for key in ("verdict", "useful", "relevant", "answer", "score", "label"):
            if key in value:
                return _as_flag(value[key])
        raise ParseError(f"no 'verdict' in {_excerpt(body, 80)!r}")
    if isinstance(value, (int, bool, str)) and not isinstance(value, float):
        return _as_flag(value)
    match = re.search(r'"?verdict"?\s*[:=]\s*"?(\w+)', body, re.I)
    if match:
        return _as_flag(match.group(1))
    first = re.match(r"\W*(\w+)", body)
    if first and (first.group(1).lower() in _YES or first.group(1).lower() in _NO):
        rest = body[first.end():first.end() + 40].lower()
        if not re.search(r"\b(yes|no|0|1)\b", rest):  # "yes ... no" is ambiguous
            return _as_flag(first.group(1))
    raise ParseError(f"no verdict in {_excerpt(body, 80)!r}")


def parse_index_list(text: str, n: int, keys: Sequence[str]) -> set[int]:
    """1-based item numbers in [1, n] from {"<key>": [..]}, a bare list, or "1, 3" / "none"."""
    body = _strip(text)
    try:
        value = extract_json(body)
    except ParseError:
        value = None
    if isinstance(value, dict):
        found = next((value[k] for k in keys if k in value), None)
        if found is None:
            raise ParseError(f"none of {list(keys)} in {_excerpt(body, 80)!r}")
        value = found
    if value is None:
        if re.fullmatch(r"(none|\[\s*\]|-|no|0)\.?", body.strip().lower()):
            return set()
        if not re.fullmatch(r"[\d\s,;.and]+", body.strip()):
            raise ParseError(f"no list of numbers in {_excerpt(body, 80)!r}")
        value = re.findall(r"\d+", body)
    if isinstance(value, (int, str)):
        value = [value]
    if not isinstance(value, list):
        raise ParseError(f"not a list: {_excerpt(str(value), 80)!r}")
    out = set()
    for item in value:
        try:
            number = int(str(item).strip().strip("[]()."))
        except ValueError:
            raise ParseError(f"not a number: {item!r}") from None
        if not 1 <= number <= n:
            raise ParseError(f"number {number} out of range 1..{n}")
        out.add(number)
    return out


def parse_string_list(text: str, key: str) -> list[str]:
    value = extract_json(text)
    if isinstance(value, dict):
        if key not in value:
            raise ParseError(f"no '{key}' in the answer")
        value = value[key]
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise ParseError(f"'{key}' is not a list of strings")
    return [str(v).strip() for v in value if str(v).strip()]


def parse_claims(text: str, fields: dict[str, str], n_contexts: int = 0) -> list[dict[str, Any]]:
    """{"claims": [{"claim": str, <field>: 0/1 | [context numbers]}]}; ``fields`` maps name -> "flag"|"indices"."""
    value = extract_json(text)
    if isinstance(value, dict):
        if "claims" not in value:
            raise ParseError("no 'claims' in the answer")
        value = value["claims"]
    if not isinstance(value, list):
        raise ParseError("'claims' is not a list")
    claims = []
    for item in value:
        if not isinstance(item, dict):
            raise ParseError(f"claim is not an object: {item!r}")
        claim: dict[str, Any] = {"claim": str(item.get("claim", item.get("statement", "")))}
        for name, kind in fields.items():
            if name not in item:
                raise ParseError(f"claim without '{name}'")
            if kind == "flag":
                claim[name] = _as_flag(item[name])
            else:
                raw = item[name]
                raw = [] if raw in (None, "", "none") else raw
                raw = raw if isinstance(raw, list) else [raw]
                numbers = set()
                for entry in raw:
                    try:
                        number = int(str(entry).strip().strip("[]()."))
                    except ValueError:
                        raise ParseError(f"not a context number: {entry!r}") from None
                    if not 1 <= number <= n_contexts:
                        raise ParseError(f"context number {number} out of range 1..{n_contexts}")
                    numbers.add(number)
                claim[name] = sorted(numbers)
        claims.append(claim)
    return claims


def parse_questions(text: str) -> tuple[list[str], int]:
    value = extract_json(text)
    if not isinstance(value, dict) or "questions" not in value:
        raise ParseError("no 'questions' in the answer")
    questions = value["questions"]
    if isinstance(questions, str):
        questions = [questions]
    if not isinstance(questions, list) or not all(isinstance(q, str) for q in questions):
        raise ParseError("'questions' is not a list of strings")
    questions = [q.strip() for q in questions if q.strip()]
    noncommittal = _as_flag(value.get("noncommittal", 0))
    if not questions and not noncommittal:
        raise ParseError("no question generated")
    return questions, noncommittal


def split_sentences(text: str) -> list[str]:
    """Reference-answer sentences for context recall (deterministic; abbreviations like 'TS.' kept whole)."""
    parts = [p.strip() for p in re.split(r"(?<=[.!?…])\s+|\n+", text or "") if p.strip()]
    merged: list[str] = []
    for part in parts:
        if merged and len(merged[-1]) <= 4:  # "TS." / "ThS." / "1." glued to what follows
            merged[-1] = f"{merged[-1]} {part}"
        else:
            merged.append(part)
    return merged


# ---------------------------------------------------------------------------- prompts

SYSTEM = "You are a careful, strict evaluator of a retrieval-augmented QA system. Reply with JSON only, no prose."
RETRY_NUDGE = ("Your previous reply could not be read. Reply again with only the JSON object in exactly the format "
               "requested, nothing else.")


def _msgs(user: str) -> Messages:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def precision_prompt(question: str, reference: str, context: str) -> Messages:
    target = (f"was useful in arriving at the reference answer to the question.\n\nQuestion: {question}\n"
              f"Reference answer: {reference}" if reference else
              f"is useful for answering the question.\n\nQuestion: {question}")
    return _msgs(f"Decide whether the context {target}\n\nContext: {context}\n\n"
                 'Reply with JSON: {"reason": "<one short sentence>", "verdict": 1} if it is useful, '
                 '{"reason": "<one short sentence>", "verdict": 0} if not.')


def recall_prompt(question: str, sentences: Sequence[str], context: str) -> Messages:
    numbered = "\n".join(f"{i}. {s}" for i, s in enumerate(sentences, start=1))
    return _msgs("Below are the numbered sentences of a reference answer, and a context passage. For each sentence, "
                 "decide whether its information can be attributed to the context (stated in it or directly "
                 f"supported by it).\n\nQuestion: {question}\n\nReference answer sentences:\n{numbered}\n\n"
                 f"Context: {context}\n\n"
                 'Reply with JSON: {"attributed": [numbers of the sentences attributable to the context]} '
                 '(use [] if none).')


def entities_prompt(reference: str) -> Messages:
    return _msgs("List the named entities in the text: people, organisations, places, dates and times, numbers "
                 "with their units, names of events, products and roles. Keep each entity as written in the text; "
                 f"no duplicates.\n\nText: {reference}\n\n"
                 'Reply with JSON: {"entities": ["...", "..."]} (use [] if there are none).')


def entities_present_prompt(entities: Sequence[str], context: str) -> Messages:
    numbered = "\n".join(f"{i}. {e}" for i, e in enumerate(entities, start=1))
    return _msgs("Which of the numbered entities are mentioned in the context (the same entity, possibly written "
                 f"differently)?\n\nEntities:\n{numbered}\n\nContext: {context}\n\n"
                 'Reply with JSON: {"present": [numbers of the entities mentioned in the context]} (use [] if none).')


def _numbered_contexts(contexts: Sequence[str]) -> str:
    return "\n".join(f"[{i}] {c}" for i, c in enumerate(contexts, start=1))


def groundedness_prompt(question: str, answer: str, contexts: Sequence[str]) -> Messages:
    return _msgs("Break the answer into short standalone claims. For each claim decide whether the contexts support "
                 f"it (1) or not (0).\n\nQuestion: {question}\n\nContexts:\n{_numbered_contexts(contexts)}\n\n"
                 f"Answer: {answer}\n\n"
                 'Reply with JSON: {"claims": [{"claim": "...", "supported": 1}, ...]}. If the answer makes no claim '
                 '(for example it says it does not know), reply {"claims": []}.')


def relevancy_prompt(answer: str, n: int = 3) -> Messages:
    return _msgs(f"Write {n} different questions that the answer below answers, in the answer's language. Also say "
                 "whether the answer is noncommittal (evasive or vague, e.g. 'I don't know', 'I'm not sure').\n\n"
                 f"Answer: {answer}\n\n"
                 'Reply with JSON: {"questions": ["...", "...", "..."], "noncommittal": 0} (noncommittal 1 if it is).')


def noise_prompt(question: str, reference: str, answer: str, contexts: Sequence[str]) -> Messages:
    return _msgs("Break the answer into short standalone claims. For each claim give \"correct\": 1 if the reference "
                 "answer supports it, else 0; and \"supported_by\": the numbers of the contexts that state or support "
                 f"it ([] if none).\n\nQuestion: {question}\n\nReference answer: {reference}\n\n"
                 f"Contexts:\n{_numbered_contexts(contexts)}\n\nAnswer: {answer}\n\n"
                 'Reply with JSON: {"claims": [{"claim": "...", "correct": 1, "supported_by": [1]}, ...]}; '
                 '{"claims": []} if the answer makes no claim.')


# ---------------------------------------------------------------------------- judge


@dataclass
class Failure:
    kind: str
    query_row: int
    passage_id: str | None
    system: str | None
    response: str

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class ContextJudgements:
    """Per (query, passage): usefulness verdict, attributed reference sentences, reference entities present."""

    verdicts: dict[tuple[int, int], int | None] = field(default_factory=dict)
    attributed: dict[tuple[int, int], set[int] | None] = field(default_factory=dict)
    entities: dict[int, list[str] | None] = field(default_factory=dict)
    present: dict[tuple[int, int], set[int] | None] = field(default_factory=dict)
    sentences: dict[int, list[str]] = field(default_factory=dict)


class Judge:
    """LLM-judged metrics; asks in parallel, parses, retries a malformed answer once, counts failures."""

    def __init__(self, llm: CachedLLM, workers: int = 4, progress: bool | None = None) -> None:
        self.llm = llm
        self.workers = max(1, workers)
        self.progress = progress
        self.failures: list[Failure] = []
        self.asked = 0
        self.retried = 0
        self._lock = threading.Lock()

    # -- core

    def ask(self, messages: Messages, parser: Callable[[str], Any], kind: str, query_row: int,
            passage_id: str | None = None, system: str | None = None) -> Any:
        """Parsed answer, or None after a malformed answer and a malformed retry (counted in ``failures``)."""
        with self._lock:
            self.asked += 1
        first = self.llm.ask(messages, kind)
        try:
            return parser(first)
        except ParseError:
            pass
        with self._lock:
            self.retried += 1
        retry = messages + [{"role": "assistant", "content": first}, {"role": "user", "content": RETRY_NUDGE}]
        second = self.llm.ask(retry, kind)
        try:
            return parser(second)
        except ParseError:
            with self._lock:
                self.failures.append(Failure(kind, query_row, passage_id, system, _excerpt(second, 200)))
            return None

    def run_all(self, jobs: Sequence[Callable[[], Any]], desc: str) -> list[Any]:
        """Run the jobs on a thread pool (order kept); the first EndpointError stops everything."""
        from tqdm.auto import tqdm

        if not jobs:
            return []
        results: list[Any] = [None] * len(jobs)
        with ThreadPoolExecutor(max_workers=self.workers) as pool, \
                tqdm(total=len(jobs), desc=desc, disable=None if self.progress is None else not self.progress,
                     leave=False) as bar:
            futures = {pool.submit(job): i for i, job in enumerate(jobs)}
            try:
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update(1)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        return results

    def failure_rate(self) -> float:
        return len(self.failures) / self.asked if self.asked else 0.0

    def summary(self) -> dict[str, Any]:
        return {"model": self.llm.model_id, "judgements": self.asked, "retried": self.retried,
                "failures": len(self.failures), "requests": self.llm.requests, "cache_hits": self.llm.cache_hits,
                "failed": [f.as_dict() for f in self.failures[:200]]}

    # -- context metrics

    def judge_contexts(self, queries: Sequence[Any], passages: dict[int, set[int]], corpus: Any,
                       entities: bool = True) -> ContextJudgements:
        """Judge every (query, passage) pair any system retrieved in its top max(k): once each."""
        out = ContextJudgements()
        jobs: list[Callable[[], Any]] = []
        slots: list[tuple[str, Any]] = []
        for qi, query in enumerate(queries):
            out.sentences[qi] = split_sentences(query.answer)
            if entities and query.answer:
                jobs.append(lambda q=query: self.ask(entities_prompt(q.answer), lambda t: parse_string_list(
                    t, "entities"), "entities", q.row))
                slots.append(("entities", qi))
        for qi, found in zip([s[1] for s in slots], self.run_all(jobs, "judge: entities")):
            out.entities[qi] = found
        jobs, slots = [], []
        for qi, query in enumerate(queries):
            sentences = out.sentences[qi]
            ents = out.entities.get(qi)
            for pi in sorted(passages.get(qi, ())):
                context, pid = corpus.texts[pi], corpus.ids[pi]
                jobs.append(lambda q=query, c=context, p=pid: self.ask(
                    precision_prompt(q.query, q.answer, c), parse_verdict, "context_precision", q.row, p))
                slots.append(("verdicts", (qi, pi)))
                if sentences:
                    jobs.append(lambda q=query, c=context, p=pid, s=sentences: self.ask(
                        recall_prompt(q.query, s, c), lambda t, n=len(s): parse_index_list(
                            t, n, ("attributed", "sentences")), "context_recall", q.row, p))
                    slots.append(("attributed", (qi, pi)))
                if ents:
                    jobs.append(lambda c=context, p=pid, e=ents, q=query: self.ask(
                        entities_present_prompt(e, c), lambda t, n=len(e): parse_index_list(
                            t, n, ("present", "entities")), "context_entities", q.row, p))
                    slots.append(("present", (qi, pi)))
        for (name, key), value in zip(slots, self.run_all(jobs, "judge: contexts")):
            getattr(out, name)[key] = value
        return out

    @staticmethod
    def context_scores(judged: ContextJudgements, ranked: Sequence[Sequence[int]], ks: Sequence[int],
                       entities: bool = True) -> list[dict[str, float | None]]:
        """Per query, LLM context precision/recall/entities recall at each k (None: not scorable)."""
        rows = []
        for qi, row in enumerate(ranked):
            values: dict[str, float | None] = {}
            sentences = judged.sentences.get(qi) or []
            ents = judged.entities.get(qi)
            for k in ks:
                top = list(row[:k])
                verdicts = [judged.verdicts.get((qi, pi)) for pi in top]
                values[f"llm_context_precision@{k}"] = (None if any(v is None for v in verdicts)
                                                        else rank_weighted_precision(verdicts))
                if sentences:
                    sets = [judged.attributed.get((qi, pi)) for pi in top]
                    values[f"llm_context_recall@{k}"] = (None if any(s is None for s in sets) else
                                                         len(set().union(*sets)) / len(sentences))
                else:
                    values[f"llm_context_recall@{k}"] = None
                if entities:
                    if ents:
                        sets = [judged.present.get((qi, pi)) for pi in top]
                        values[f"llm_context_entities_recall@{k}"] = (None if any(s is None for s in sets) else
                                                                      len(set().union(*sets)) / len(ents))
                    else:
                        values[f"llm_context_entities_recall@{k}"] = None
            rows.append(values)
        return rows



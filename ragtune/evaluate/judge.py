"""LLM-judged context metrics (RAGAS's definitions), and the judge that asks, parses, retries and counts.

Judgements are made per (query, passage), not per (system, k): a passage retrieved by five systems at
ranks 2, 3 and 6 is judged once, and every system's context precision/recall at every k is computed
from those verdicts. The answer metrics' prompts are in :mod:`ragtune.evaluate.answers`; the HTTP client,
the cache and the parsers in :mod:`ragtune.generation.llm_client`, :mod:`ragtune.generation.llm_cache`,
:mod:`ragtune.evaluate.llm_parsing`.

Failures: an answer that cannot be parsed is asked again once, with a reminder of the format; if
that also fails, the judgement is counted in ``failures`` and the queries that needed it are left
out of that metric's mean (and counted), never scored 0.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ragtune.core.metrics import rank_weighted_precision
from ragtune.evaluate.llm_parsing import ParseError, excerpt, parse_index_list, parse_string_list, parse_verdict
from ragtune.generation.generators import run_in_threads
from ragtune.generation.llm_cache import CachedLLM
from ragtune.generation.prompt import Messages


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


def judge_messages(user: str) -> Messages:
    """The judge's system prompt, then ``user``."""
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def precision_prompt(question: str, reference: str, context: str) -> Messages:
    target = (f"was useful in arriving at the reference answer to the question.\n\nQuestion: {question}\n"
              f"Reference answer: {reference}" if reference else
              f"is useful for answering the question.\n\nQuestion: {question}")
    return judge_messages(
        f"Decide whether the context {target}\n\nContext: {context}\n\n"
        'Reply with JSON: {"reason": "<one short sentence>", "verdict": 1} if it is useful, '
        '{"reason": "<one short sentence>", "verdict": 0} if not.')


def recall_prompt(question: str, sentences: Sequence[str], context: str) -> Messages:
    numbered = "\n".join(f"{i}. {s}" for i, s in enumerate(sentences, start=1))
    return judge_messages(
        "Below are the numbered sentences of a reference answer, and a context passage. For each sentence, "
        "decide whether its information can be attributed to the context (stated in it or directly "
        f"supported by it).\n\nQuestion: {question}\n\nReference answer sentences:\n{numbered}\n\n"
        f"Context: {context}\n\n"
        'Reply with JSON: {"attributed": [numbers of the sentences attributable to the context]} '
        '(use [] if none).')


def entities_prompt(reference: str) -> Messages:
    return judge_messages(
        "List the named entities in the text: people, organisations, places, dates and times, numbers "
        "with their units, names of events, products and roles. Keep each entity as written in the text; "
        f"no duplicates.\n\nText: {reference}\n\n"
        'Reply with JSON: {"entities": ["...", "..."]} (use [] if there are none).')


def entities_present_prompt(entities: Sequence[str], context: str) -> Messages:
    numbered = "\n".join(f"{i}. {e}" for i, e in enumerate(entities, start=1))
    return judge_messages(
        "Which of the numbered entities are mentioned in the context (the same entity, possibly written "
        f"differently)?\n\nEntities:\n{numbered}\n\nContext: {context}\n\n"
        'Reply with JSON: {"present": [numbers of the entities mentioned in the context]} (use [] if none).')


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
                self.failures.append(Failure(kind, query_row, passage_id, system, excerpt(second, 200)))
            return None

    def run_all(self, jobs: Sequence[Callable[[], Any]], desc: str) -> list[Any]:
        """Run the jobs on a thread pool (order kept); the first EndpointError stops everything."""
        return run_in_threads(jobs, self.workers, desc, self.progress)

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
                values[f"llm_context_recall@{k}"] = _covered(judged.attributed, qi, top, len(sentences))
                if entities:
                    values[f"llm_context_entities_recall@{k}"] = _covered(judged.present, qi, top, len(ents or ()))
            rows.append(values)
        return rows


def _covered(found: dict[tuple[int, int], set[int] | None], qi: int, passages: Sequence[int],
             total: int) -> float | None:
    """Share of the ``total`` items (reference sentences, entities) that some of the passages cover, from the
    judge's per-passage sets; None when there is nothing to cover or a passage's judgement failed."""
    if not total:
        return None
    sets = [found.get((qi, pi)) for pi in passages]
    return None if any(s is None for s in sets) else len(set().union(*sets)) / total

"""Answers generated from each system's contexts, their metrics, and the judge prompts those metrics use.

The generators and their prompt are the RAG pipeline's (:mod:`ragtune.generation.generators`: a local causal
LM, optionally with a LoRA adapter, or any OpenAI-compatible endpoint), so evaluate_rag.py measures the answers
predict_rag.py gives. Greedy / temperature 0, through the same disk cache as the judge: a rerun generates
nothing. (The context metrics' prompts are in :mod:`ragtune.evaluate.judge`.)

Metrics (per query, then the mean; BLEU at corpus level):
  string_presence     1 if the normalised reference answer occurs in the normalised generated answer
  rouge_l             ROUGE-L F1 (rouge_score) on lower-cased Unicode word tokens: Vietnamese letters
                      with diacritics survive, unlike rouge_score's default [a-z0-9] tokenizer
  bleu4               sacrebleu corpus BLEU-4 (13a tokenizer, exponential smoothing), divided by 100
  groundedness        judge: share of the answer's claims supported by the contexts
  response_relevancy  judge + embeddings: mean cosine between the question and 3 questions generated
                      from the answer; 0 if the judge finds the answer noncommittal (RAGAS)
  noise_sensitivity   judge: share of the answer's claims that are wrong (per the reference answer)
                      yet supported by a retrieved context; lower is better (RAGAS)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ragtune.core.answer_metrics import bleu4, rouge_l, string_presence
from ragtune.evaluate.judge import Judge, judge_messages
from ragtune.evaluate.llm_parsing import parse_claims, parse_questions
from ragtune.evaluate.systems import add_per_query_metrics
from ragtune.generation.generators import answer_messages
from ragtune.generation.prompt import Messages

logger = logging.getLogger(__name__)

ANSWER_METRICS = ("string_presence", "rouge_l", "bleu4", "groundedness", "response_relevancy", "noise_sensitivity")
JUDGED_ANSWER_METRICS = ("groundedness", "response_relevancy", "noise_sensitivity")

# ---------------------------------------------------------------------------- judge prompts


def _numbered_contexts(contexts: Sequence[str]) -> str:
    return "\n".join(f"[{i}] {c}" for i, c in enumerate(contexts, start=1))


def groundedness_prompt(question: str, answer: str, contexts: Sequence[str]) -> Messages:
    return judge_messages(
        "Break the answer into short standalone claims. For each claim decide whether the contexts support "
        f"it (1) or not (0).\n\nQuestion: {question}\n\nContexts:\n{_numbered_contexts(contexts)}\n\n"
        f"Answer: {answer}\n\n"
        'Reply with JSON: {"claims": [{"claim": "...", "supported": 1}, ...]}. If the answer makes no claim '
        '(for example it says it does not know), reply {"claims": []}.')


def relevancy_prompt(answer: str, n: int = 3) -> Messages:
    return judge_messages(
        f"Write {n} different questions that the answer below answers, in the answer's language. Also say "
        "whether the answer is noncommittal (evasive or vague, e.g. 'I don't know', 'I'm not sure').\n\n"
        f"Answer: {answer}\n\n"
        'Reply with JSON: {"questions": ["...", "...", "..."], "noncommittal": 0} (noncommittal 1 if it is).')


def noise_prompt(question: str, reference: str, answer: str, contexts: Sequence[str]) -> Messages:
    return judge_messages(
        "Break the answer into short standalone claims. For each claim give \"correct\": 1 if the reference "
        "answer supports it, else 0; and \"supported_by\": the numbers of the contexts that state or support "
        f"it ([] if none).\n\nQuestion: {question}\n\nReference answer: {reference}\n\n"
        f"Contexts:\n{_numbered_contexts(contexts)}\n\nAnswer: {answer}\n\n"
        'Reply with JSON: {"claims": [{"claim": "...", "correct": 1, "supported_by": [1]}, ...]}; '
        '{"claims": []} if the answer makes no claim.')


# ---------------------------------------------------------------------------- evaluation


@dataclass
class AnswerSlot:
    """One answer to generate and score: a system's top-``k`` contexts for one query."""

    system: int  # index into the systems
    k: int
    query: int  # index into the queries
    contexts: list[str]


def answer_slots(systems: Sequence[Any], queries: Sequence[Any], corpus: Any, ks: Sequence[int]) -> list[AnswerSlot]:
    """Every (system, k, query), in that order of loops."""
    return [AnswerSlot(si, k, qi, [corpus.texts[pi] for pi in system.ranked[qi][:k]])
            for si, system in enumerate(systems) for k in ks for qi in range(len(queries))]


def evaluate_answers(systems: Sequence[Any], queries: Sequence[Any], corpus: Any, ks: Sequence[int], generator: Any,
                     judge: Judge | None, embed_queries: Any | None) -> list[dict[str, Any]]:
    """Generate an answer per (system, k, query) from its top-k contexts, and score it.

    Adds per-query values to each system (``add_per_query_metrics``) and corpus BLEU to its metrics;
    returns one record per answer for answers.csv. ``embed_queries(texts) -> normalised vectors`` is
    needed for response relevancy; without it (or without a judge) the judged metrics are skipped.
    """
    slots = answer_slots(systems, queries, corpus, ks)
    system_prompt = getattr(generator, "system_prompt", None)
    prompts = [answer_messages(queries[slot.query].query, slot.contexts, system_prompt) for slot in slots]
    logger.info("Generating %d answers (%d systems x %d k x %d queries) with %s", len(prompts), len(systems),
                len(ks), len(queries), generator.model_id)
    answers = generator.generate(prompts)
    judged: list[dict[str, Any]] = [{} for _ in slots]
    relevancy: list[float | None] = [None] * len(slots)
    if judge is not None:
        judged = judge_answers(judge, slots, answers, systems, queries, embed_queries is not None)
        if embed_queries is not None:
            relevancy = response_relevancy(judged, slots, queries, embed_queries)

    records = []
    per_system: list[list[dict[str, float | None]]] = [[{} for _ in queries] for _ in systems]
    bleu_inputs: dict[tuple[int, int], tuple[list[str], list[str]]] = {}
    for n, (slot, answer) in enumerate(zip(slots, answers)):
        query = queries[slot.query]
        values = reference_scores(answer, query.answer)
        if judge is not None:
            values.update(judged_scores(judged[n], relevancy[n], embed_queries is not None, bool(query.answer)))
        per_system[slot.system][slot.query].update({f"{name}@{slot.k}": value for name, value in values.items()})
        if query.answer:
            preds, refs = bleu_inputs.setdefault((slot.system, slot.k), ([], []))
            preds.append(answer)
            refs.append(query.answer)
        records.append({"system": systems[slot.system].name, "k": slot.k, "row": query.row, "query": query.query,
                        "reference": query.answer, "answer": answer, **values})
    for si, system in enumerate(systems):
        add_per_query_metrics(system, per_system[si])
        for k in ks:
            preds, refs = bleu_inputs.get((si, k), ([], []))
            system.metrics[f"bleu4@{k}"] = bleu4(preds, refs) if preds else None
    return records


def judge_answers(judge: Judge, slots: Sequence[AnswerSlot], answers: Sequence[str], systems: Sequence[Any],
                  queries: Sequence[Any], relevancy: bool) -> list[dict[str, Any]]:
    """Per answer, the judge's parsed replies: "groundedness" (claims), "relevancy" (questions, noncommittal) when
    ``relevancy``, "noise" (claims) when the query has a reference answer; None where a reply stayed malformed."""
    jobs, keys = [], []
    for n, (slot, answer) in enumerate(zip(slots, answers)):
        query, contexts, name = queries[slot.query], slot.contexts, systems[slot.system].name
        jobs.append(lambda q=query, a=answer, c=contexts, s=name: judge.ask(
            groundedness_prompt(q.query, a, c), lambda t: parse_claims(t, {"supported": "flag"}),
            "groundedness", q.row, system=s))
        keys.append((n, "groundedness"))
        if relevancy:
            jobs.append(lambda q=query, a=answer, s=name: judge.ask(
                relevancy_prompt(a), parse_questions, "response_relevancy", q.row, system=s))
            keys.append((n, "relevancy"))
        if query.answer:
            jobs.append(lambda q=query, a=answer, c=contexts, s=name: judge.ask(
                noise_prompt(q.query, q.answer, a, c), lambda t, n_c=len(c): parse_claims(
                    t, {"correct": "flag", "supported_by": "indices"}, n_c), "noise_sensitivity", q.row,
                system=s))
            keys.append((n, "noise"))
    judged: list[dict[str, Any]] = [{} for _ in slots]
    for (n, name), value in zip(keys, judge.run_all(jobs, "judge: answers")):
        judged[n][name] = value
    return judged


def response_relevancy(judged: Sequence[dict[str, Any]], slots: Sequence[AnswerSlot], queries: Sequence[Any],
                       embed_queries: Any) -> list[float | None]:
    """Per answer, the mean cosine between its question and the questions the judge wrote from it (RAGAS).

    0 for a noncommittal answer (or no question); None where the judge's reply stayed malformed.
    """
    relevancy: list[float | None] = [None] * len(slots)
    texts: list[str] = []
    plan: list[tuple[int, int, int]] = []  # (answer index, first text, count)
    for n, found in enumerate(judged):
        if found.get("relevancy") is None:
            continue
        questions, noncommittal = found["relevancy"]
        if noncommittal or not questions:
            relevancy[n] = 0.0
            continue
        plan.append((n, len(texts), len(questions)))
        texts += [queries[slots[n].query].query] + questions
    if texts:
        vectors = np.asarray(embed_queries(texts), dtype=np.float32)
        for n, first, count in plan:
            question, generated = vectors[first], vectors[first + 1:first + 1 + count]
            relevancy[n] = float(np.mean(generated @ question))
    return relevancy


def reference_scores(answer: str, reference: str) -> dict[str, float | None]:
    """String presence and ROUGE-L against the reference answer (None without one)."""
    if not reference:
        return {"string_presence": None, "rouge_l": None}
    return {"string_presence": string_presence(answer, reference), "rouge_l": rouge_l(answer, reference)}


def judged_scores(found: dict[str, Any], relevancy: float | None, with_relevancy: bool,
                  has_reference: bool) -> dict[str, float | None]:
    """Groundedness, response relevancy (``with_relevancy``) and noise sensitivity of one answer from the judge's
    replies; None where a reply stayed malformed, or (noise) without a reference answer."""
    values: dict[str, float | None] = {"groundedness": _share(found.get("groundedness"), lambda c: c["supported"])}
    if with_relevancy:
        values["response_relevancy"] = relevancy
    values["noise_sensitivity"] = (_share(found.get("noise"), lambda c: not c["correct"] and c["supported_by"])
                                   if has_reference else None)
    return values


def _share(claims: list[dict[str, Any]] | None, counts: Any) -> float | None:
    """The share of ``claims`` for which ``counts(claim)`` holds; None for no claims (or no reply)."""
    return sum(1 for claim in claims if counts(claim)) / len(claims) if claims else None

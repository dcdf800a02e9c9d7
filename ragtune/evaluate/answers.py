"""Answer generation from retrieved contexts, answer metrics, and the judge prompts those metrics use.

Generators: any OpenAI-compatible endpoint, or a local transformers causal LM (optionally with a
LoRA adapter loaded with peft). Both run greedy / temperature 0 and go through the same disk
cache as the judge, so a rerun generates nothing. (The context metrics' prompts are in
:mod:`ragtune.evaluate.judge`.)

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

import hashlib
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ragtune.core.answer_metrics import bleu4, rouge_l, string_presence
from ragtune.core.errors import UserError
from ragtune.evaluate.judge import Judge, judge_messages
from ragtune.evaluate.llm_cache import CachedLLM, LLMCache
from ragtune.evaluate.llm_client import Messages
from ragtune.evaluate.llm_parsing import parse_claims, parse_questions
from ragtune.core.model_specs import folder_fingerprint
from ragtune.evaluate.systems import add_per_query_metrics

logger = logging.getLogger(__name__)

ANSWER_METRICS = ("string_presence", "rouge_l", "bleu4", "groundedness", "response_relevancy", "noise_sensitivity")
JUDGED_ANSWER_METRICS = ("groundedness", "response_relevancy", "noise_sensitivity")

# ---------------------------------------------------------------------------- prompts


def answer_messages(question: str, contexts: Sequence[str], system_prompt: str | None = None) -> Messages:
    """The generator's prompt: ragtune.generation.prompt's, the one fine_tune_generator.py trains on.

    ``system_prompt`` None means the default (Vietnamese) one; a local adapter brings the one it was
    trained with (LocalGenerator.system_prompt).
    """
    from ragtune.generation.prompt import DEFAULT_SYSTEM_PROMPT, rag_messages

    return rag_messages(question, contexts, DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt)


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


# ---------------------------------------------------------------------------- string metrics


_SCORER = None


# ---------------------------------------------------------------------------- generators


class EndpointGenerator:
    """Answers from an OpenAI-compatible endpoint, through the disk cache, in parallel."""

    def __init__(self, llm: CachedLLM, judge_pool: Judge) -> None:
        self.llm = llm
        self.pool = judge_pool
        self.model_id = llm.model_id

    def generate(self, prompts: Sequence[Messages]) -> list[str]:
        jobs = [lambda m=m: self.llm.ask(m, "generate") for m in prompts]
        return [(a or "").strip() for a in self.pool.run_all(jobs, "generate")]


class LocalGenerator:
    """A local transformers causal LM (a folder or a .gguf file, plus an optional peft LoRA adapter).

    Loading and generation are ragtune.generation.inference's, as in fine_tune_generator.py's dev
    evaluation: the adapter's tokenizer and chat template, thinking off (Qwen3), greedy decoding
    that stops at the end-of-turn tokens, and the system prompt the adapter was trained with.
    """

    def __init__(self, path: str, adapter: str | None, cache: LLMCache, max_new_tokens: int = 256,
                 batch_size: int = 4, device: str | None = None) -> None:
        from ragtune.generation.inference import is_gguf
        from ragtune.generation.prompt import trained_system_prompt
        from ragtune.core.model_specs import file_digest

        self.path = Path(path).expanduser()
        gguf = is_gguf(str(self.path))
        if gguf and not self.path.is_file():
            raise UserError(f"--generator_local: GGUF file not found: {path}")
        if not gguf and (not self.path.is_dir() or not (self.path / "config.json").exists()):
            raise UserError(f"--generator_local: {path} is not a model folder (no config.json) nor a .gguf file")
        self.adapter = Path(adapter).expanduser() if adapter else None
        if self.adapter is not None and not (self.adapter / "adapter_config.json").exists():
            raise UserError(f"--generator_adapter: {adapter} is not a peft adapter folder (no adapter_config.json)")
        if gguf:
            digest = hashlib.sha256()
            file_digest(self.path, digest)
            ident = f"local:gguf:{digest.hexdigest()[:16]}"
        else:
            ident = f"local:{folder_fingerprint(self.path)}"
        if self.adapter is not None:
            ident += f"+lora:{folder_fingerprint(self.adapter)}"
        self.model_id = ident
        self.system_prompt = trained_system_prompt(str(self.adapter) if self.adapter else None)
        self.cache = cache
        self.max_new_tokens = max_new_tokens
        self.batch_size = max(1, batch_size)
        self.device = device
        self.requests = 0
        self._model = None
        self._tokenizer = None

    def _load(self) -> None:
        if self._model is None:
            from ragtune.generation.inference import load_generator

            self._model, self._tokenizer = load_generator(str(self.path), str(self.adapter) if self.adapter else None,
                                                          device=self.device)

    def generate(self, prompts: Sequence[Messages]) -> list[str]:
        from tqdm.auto import tqdm

        from ragtune.generation.inference import generate_from_messages

        params = {"temperature": 0.0, "max_tokens": self.max_new_tokens}
        keys = [LLMCache.key(self.model_id, m, params) for m in prompts]
        answers: list[str | None] = [self.cache.get(k) for k in keys]
        todo = [i for i, a in enumerate(answers) if a is None]
        if todo:
            self._load()
            model, tokenizer = self._model, self._tokenizer
            limit = getattr(model.config, "max_position_embeddings", None) or 2048
            max_input = max(16, int(limit) - self.max_new_tokens)
            for start in tqdm(range(0, len(todo), self.batch_size), desc="generate (local)", leave=False):
                batch = todo[start:start + self.batch_size]
                texts = generate_from_messages(model, tokenizer, [prompts[i] for i in batch], self.max_new_tokens,
                                               self.batch_size, max_input_tokens=max_input)
                for i, text in zip(batch, texts):
                    answers[i] = text
                    self.cache.put(keys[i], text, {"model": self.model_id, "kind": "generate"})
                self.requests += len(batch)
        return [a or "" for a in answers]


# ---------------------------------------------------------------------------- evaluation


def evaluate_answers(systems: Sequence[Any], queries: Sequence[Any], corpus: Any, ks: Sequence[int], generator: Any,
                     judge: Judge | None, embed_queries: Any | None) -> list[dict[str, Any]]:
    """Generate an answer per (system, k, query) from its top-k contexts, and score it.

    Adds per-query values to each system (``add_per_query_metrics``) and corpus BLEU to its metrics;
    returns one record per answer for answers.csv. ``embed_queries(texts) -> normalised vectors`` is
    needed for response relevancy; without it (or without a judge) the judged metrics are skipped.
    """
    slots: list[tuple[int, int, int]] = []  # (system, k, query)
    prompts: list[Messages] = []
    for si, system in enumerate(systems):
        for k in ks:
            for qi, query in enumerate(queries):
                contexts = [corpus.texts[pi] for pi in system.ranked[qi][:k]]
                slots.append((si, k, qi))
                prompts.append(answer_messages(query.query, contexts, getattr(generator, "system_prompt", None)))
    logger.info("Generating %d answers (%d systems x %d k x %d queries) with %s", len(prompts), len(systems),
                len(ks), len(queries), generator.model_id)
    answers = generator.generate(prompts)

    judged: dict[int, dict[str, Any]] = {}
    if judge is not None:
        jobs, keys = [], []
        for n, ((si, k, qi), answer) in enumerate(zip(slots, answers)):
            query = queries[qi]
            contexts = [corpus.texts[pi] for pi in systems[si].ranked[qi][:k]]
            name = systems[si].name
            jobs.append(lambda q=query, a=answer, c=contexts, s=name: judge.ask(
                groundedness_prompt(q.query, a, c), lambda t: parse_claims(t, {"supported": "flag"}),
                "groundedness", q.row, system=s))
            keys.append((n, "groundedness"))
            if embed_queries is not None:
                jobs.append(lambda q=query, a=answer, s=name: judge.ask(
                    relevancy_prompt(a), parse_questions, "response_relevancy", q.row, system=s))
                keys.append((n, "relevancy"))
            if query.answer:
                jobs.append(lambda q=query, a=answer, c=contexts, s=name: judge.ask(
                    noise_prompt(q.query, q.answer, a, c), lambda t, n_c=len(c): parse_claims(
                        t, {"correct": "flag", "supported_by": "indices"}, n_c), "noise_sensitivity", q.row,
                    system=s))
                keys.append((n, "noise"))
        for (n, name), value in zip(keys, judge.run_all(jobs, "judge: answers")):
            judged.setdefault(n, {})[name] = value

    relevancy: dict[int, float | None] = {}
    if judge is not None and embed_queries is not None:
        texts: list[str] = []
        plan: list[tuple[int, int, int]] = []  # (answer index, first text, count)
        for n, found in judged.items():
            if "relevancy" not in found:
                continue
            if found["relevancy"] is None:
                relevancy[n] = None
                continue
            questions, noncommittal = found["relevancy"]
            if noncommittal or not questions:
                relevancy[n] = 0.0
                continue
            plan.append((n, len(texts), len(questions)))
            texts += [queries[slots[n][2]].query] + questions
        if texts:
            vectors = np.asarray(embed_queries(texts), dtype=np.float32)
            for n, first, count in plan:
                question, generated = vectors[first], vectors[first + 1:first + 1 + count]
                relevancy[n] = float(np.mean(generated @ question))

    records = []
    per_system: dict[int, list[dict[str, float | None]]] = {si: [{} for _ in queries] for si in range(len(systems))}
    bleu_inputs: dict[tuple[int, int], tuple[list[str], list[str]]] = {}
    for n, ((si, k, qi), answer) in enumerate(zip(slots, answers)):
        query = queries[qi]
        values = per_system[si][qi]
        has_ref = bool(query.answer)
        values[f"string_presence@{k}"] = string_presence(answer, query.answer) if has_ref else None
        values[f"rouge_l@{k}"] = rouge_l(answer, query.answer) if has_ref else None
        if has_ref:
            preds, refs = bleu_inputs.setdefault((si, k), ([], []))
            preds.append(answer)
            refs.append(query.answer)
        found = judged.get(n, {})
        if judge is not None:
            claims = found.get("groundedness")
            values[f"groundedness@{k}"] = (sum(c["supported"] for c in claims) / len(claims)) if claims else None
            if embed_queries is not None:
                values[f"response_relevancy@{k}"] = relevancy.get(n)
            if has_ref:
                claims = found.get("noise")
                values[f"noise_sensitivity@{k}"] = (
                    sum(1 for c in claims if not c["correct"] and c["supported_by"]) / len(claims)) if claims else None
            else:
                values[f"noise_sensitivity@{k}"] = None
        records.append({"system": systems[si].name, "k": k, "row": query.row, "query": query.query,
                        "reference": query.answer, "answer": answer,
                        **{key.split("@")[0]: value for key, value in values.items() if key.endswith(f"@{k}")}})
    for si, system in enumerate(systems):
        add_per_query_metrics(system, per_system[si])
        for k in ks:
            preds, refs = bleu_inputs.get((si, k), ([], []))
            system.metrics[f"bleu4@{k}"] = bleu4(preds, refs) if preds else None
    return records

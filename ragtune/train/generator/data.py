"""Training examples for the generator, from three formats.

(a) Query files (NeoRAG CSV/XLSX ``Query, Ground truth document, Ground truth answer`` or
    ``query, relevant_ids, answer``; FlagEmbedding JSONL with ``answer``) plus the corpus: the prompt
    holds the labelled passages and ``--num_distractors`` retrieved non-relevant ones, shuffled, so
    the model learns to find the answer among noise; ``--unanswerable_ratio`` adds examples with
    distractors only, whose target is the "no information" answer.
(b) Chat JSONL ``{"messages": [...]}``: the last assistant turn is the target, the turns before it
    the prompt.
(c) Instruction JSONL ``{"instruction", "input", "output"}``: ``input`` is taken as the context
    (Alpaca-style RAG sets put the passage there), ``instruction`` as the question.

The dev split is at the question level and seeded, as in the other scripts.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Sequence

from ragtune.core.data import (
    Corpus,
    LabelledQuery,
    load_corpus,
    load_queries,
    normalize_text,
    read_table,
    split_queries,
)
from ragtune.core.errors import UserError
from ragtune.generation.prompt import Messages, rag_messages
from ragtune.retrieval.first_stage import FirstStage
from ragtune.retrieval.negatives import draw_negatives, mine_candidates

logger = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class GeneratorExample:
    """One training/dev example: a prompt (RAG fields or fixed chat turns) and the answer to learn."""

    question: str
    answer: str
    source: str  # "file row N" / "file line N", for messages that name the bad example
    contexts: list[str] | None = None  # RAG examples: truncation may cut these
    labelled: list[bool] | None = None  # per context: a labelled passage (cut last) or a distractor
    system_prompt: str | None = None
    history: Messages = field(default_factory=list)  # chat examples: the turns before the answer
    unanswerable: bool = False

    def prompt_messages(self, contexts: Sequence[str] | None = None) -> Messages:
        """The prompt turns; RAG examples rebuilt with ``contexts`` (e.g. cut ones) when given."""
        if self.contexts is None:
            return [dict(m) for m in self.history]
        return rag_messages(self.question, self.contexts if contexts is None else contexts, self.system_prompt)


@dataclass
class GeneratorData:
    train: list[GeneratorExample]
    dev: list[GeneratorExample]
    kind: str  # "rag", "chat" or "instruction"
    description: str


# ---------------------------------------------------------------------------- format detection


def _read_jsonl_rows(path: Path, flag: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) per non-blank line, read like every other data file (ragtune.core.data.read_table):
    UTF-8 or UTF-16 with a BOM, a clear error for other encodings, invalid JSON and non-object lines."""
    table = read_table(Path(path), flag)
    if not table.records:
        raise UserError(f"{flag}: {path} holds no examples")
    return list(zip(table.numbers, table.records))


def detect_format(path: str | Path, flag: str = "--train_data") -> str:
    """'chat', 'instruction' or 'queries' (query file + corpus), from the first JSONL object or the extension."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{flag}: file not found: {path}")
    if path.suffix.lower() not in (".jsonl", ".json"):
        return "queries"
    first = _read_jsonl_rows(path, flag)[0][1]
    if "messages" in first:
        return "chat"
    if "instruction" in first or "output" in first:
        return "instruction"
    return "queries"


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or not str(value).strip()


# ---------------------------------------------------------------------------- chat and instruction JSONL


def load_chat_examples(path: str | Path, system_prompt: str | None, flag: str = "--train_data") -> list[GeneratorExample]:
    """Chat JSONL: the last assistant turn is the answer; a line without one is an error naming it."""
    path = Path(path)
    examples = []
    for line, row in _read_jsonl_rows(path, flag):
        where = f"{flag}: {path} line {line}"
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages:
            raise UserError(f"{where}: 'messages' must be a non-empty list of {{role, content}} turns")
        turns: Messages = []
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ROLES or not isinstance(
                    message.get("content"), str):
                raise UserError(f"{where}: message {i + 1} must be {{\"role\": one of {', '.join(ROLES)}, "
                                f"\"content\": text}}")
            turns.append({"role": message["role"], "content": message["content"]})
        check_turn_order(turns, where)
        last = len(turns) - 1
        if _is_blank(turns[last]["content"]):
            raise UserError(f"{where}: the last assistant turn is blank")
        history = turns[:last]
        users = [m for m in history if m["role"] == "user"]  # never empty after check_turn_order
        if system_prompt and not any(m["role"] == "system" for m in history):
            history.insert(0, {"role": "system", "content": system_prompt})
        examples.append(GeneratorExample(question=normalize_text(users[-1]["content"]),
                                         answer=turns[last]["content"].strip(), source=f"{path} line {line}",
                                         history=history))
    return examples


def check_turn_order(turns: Messages, where: str) -> None:
    """A system turn only first, then a user turn, and the assistant's answer last: anything else would be
    trained on silently wrong (a user turn after the answer dropped, an answer to no question)."""
    for i, turn in enumerate(turns):
        if turn["role"] == "system" and i > 0:
            raise UserError(f"{where}: message {i + 1} is a system turn; a system turn may only come first")
    first = 1 if turns[0]["role"] == "system" else 0
    if first < len(turns) and turns[first]["role"] != "user":
        raise UserError(f"{where}: message {first + 1} is an {turns[first]['role']} turn; the conversation must "
                        f"start with a user turn (after an optional system turn)")
    if not any(m["role"] == "assistant" for m in turns):
        raise UserError(f"{where}: no assistant turn (the answer to train on)")
    if turns[-1]["role"] != "assistant":
        raise UserError(f"{where}: message {len(turns)} is a {turns[-1]['role']} turn after the last answer; each "
                        f"line must end with the assistant's answer (the turn trained on)")


def load_instruction_examples(path: str | Path, system_prompt: str | None,
                              flag: str = "--train_data") -> list[GeneratorExample]:
    """Instruction JSONL: blank instruction or output is an error naming the line."""
    path = Path(path)
    examples = []
    for line, row in _read_jsonl_rows(path, flag):
        where = f"{flag}: {path} line {line}"
        for key in ("instruction", "output"):
            if _is_blank(row.get(key)):
                raise UserError(f"{where}: missing or blank '{key}'")
        context = row.get("input")
        examples.append(GeneratorExample(
            question=normalize_text(row["instruction"]), answer=str(row["output"]).strip(),
            source=f"{path} line {line}", contexts=[] if _is_blank(context) else [normalize_text(context)],
            system_prompt=system_prompt))
    return examples


def _split_examples(examples: list[GeneratorExample], dev_ratio: float,
                    seed: int) -> tuple[list[GeneratorExample], list[GeneratorExample]]:
    """The query-level split of ragtune.core.data, keyed on the question."""
    keyed = [SimpleNamespace(query=e.question, example=e) for e in examples]
    train, dev = split_queries(keyed, dev_ratio, seed)  # only reads ``.query``
    return [k.example for k in train], [k.example for k in dev]


# ---------------------------------------------------------------------------- query files + corpus


def check_answers(queries: Sequence[LabelledQuery], path: str | Path, flag: str = "--train_data") -> None:
    """Every query needs its reference answer: it is the training target."""
    unit = "line" if Path(path).suffix.lower() in (".jsonl", ".json") else "row"
    if queries and all(not q.answer for q in queries):
        raise UserError(f"{flag}: {path} has no answers: the generator needs a 'Ground truth answer' (or 'answer') "
                        f"column filled in for every query")
    for query in queries:
        if not query.answer:
            raise UserError(f"{flag}: {path} {unit} {query.row}: missing or blank answer")


def retrieve_distractors(queries: Sequence[LabelledQuery], corpus: Corpus, embedding_model=None,
                         depth: int = 30, expander: Callable[[str], str] | None = None) -> list[list[str]]:
    """Per query, non-relevant passages in retrieval order (BM25, or the embedding model when given), retrieved
    for the query as the first stage sees it (``expander``: --expansions); the prompt keeps the question as asked."""
    stage = FirstStage(corpus, embedding_model, expander=expander)
    return mine_candidates(queries, stage, stage.name, (1, min(depth, len(corpus)))).per_query


def build_rag_examples(queries: Sequence[LabelledQuery], corpus: Corpus, candidates: Sequence[Sequence[str]],
                       num_distractors: int, system_prompt: str | None, seed: int, source: str,
                       unanswerable_ratio: float = 0.0, unanswerable_answer: str = "") -> list[GeneratorExample]:
    """Labelled passages + drawn distractors, shuffled; plus distractor-only examples answered "no information".

    Seeded, so a resumed run and every distributed rank build the same examples.
    """
    rng = random.Random(seed)
    examples = []
    for query, pool in zip(queries, candidates):
        distractors = draw_negatives(pool, num_distractors, rng)
        shown = [(corpus.text(pid), True) for pid in query.relevant_ids] + [(corpus.text(pid), False)
                                                                            for pid in distractors]
        rng.shuffle(shown)
        examples.append(GeneratorExample(question=query.query, answer=query.answer, source=f"{source} row {query.row}",
                                         contexts=[text for text, _ in shown], labelled=[rel for _, rel in shown],
                                         system_prompt=system_prompt))
    count = int(round(unanswerable_ratio * len(queries)))
    for index in sorted(rng.sample(range(len(queries)), min(count, len(queries)))):
        query, pool = queries[index], candidates[index]
        # As many passages as the answerable version shows, none of them labelled relevant.
        distractors = draw_negatives(pool, max(1, len(query.relevant_ids) + num_distractors), rng)
        if not distractors:
            continue
        examples.append(GeneratorExample(question=query.query, answer=unanswerable_answer,
                                         source=f"{source} row {query.row} (unanswerable)",
                                         contexts=[corpus.text(pid) for pid in distractors],
                                         labelled=[False] * len(distractors), system_prompt=system_prompt,
                                         unanswerable=True))
    return examples


Audit = Callable[[Corpus, list[LabelledQuery], list[LabelledQuery]],
                 tuple[Corpus, list[LabelledQuery], list[LabelledQuery]]]


def load_generator_data(train_data: str, corpus_path: str, dev_ratio: float, seed: int, num_distractors: int,
                        system_prompt: str | None, unanswerable_ratio: float, unanswerable_answer: str,
                        embedding_model=None, audit: Audit | None = None,
                        expander: Callable[[str], str] | None = None) -> GeneratorData:
    """Read and check the data, split it, build the examples; raises UserError on any bad row.

    ``audit`` (the runner's data audit) sees the corpus and the train/dev queries with their answers
    before any example is built, and returns what to train on (redacted copies under --pii redact).
    """
    kind = detect_format(train_data)
    if kind in ("chat", "instruction"):
        load = load_chat_examples if kind == "chat" else load_instruction_examples
        train, dev = _split_examples(load(train_data, system_prompt), dev_ratio, seed)
        if audit is not None:
            train, dev = audit_examples(train, dev, audit)
        return GeneratorData(train, dev, kind, f"{kind} JSONL {train_data}")
    corpus = load_corpus(corpus_path)
    queries = load_queries(train_data, corpus)
    check_answers(queries, train_data)
    train_queries, dev_queries = split_queries(queries, dev_ratio, seed)
    if audit is not None:
        corpus, train_queries, dev_queries = audit(corpus, train_queries, dev_queries)
    candidates = retrieve_distractors(train_queries + dev_queries, corpus, embedding_model, expander=expander)
    train = build_rag_examples(train_queries, corpus, candidates[:len(train_queries)], num_distractors,
                               system_prompt, seed, train_data, unanswerable_ratio, unanswerable_answer)
    # Dev prompts look like training prompts (same distractor count), without unanswerable ones: dev
    # scores compare generated answers with reference answers.
    dev = build_rag_examples(dev_queries, corpus, candidates[len(train_queries):], num_distractors,
                             system_prompt, seed + 1, train_data)
    return GeneratorData(train, dev, "rag", (
        f"queries {train_data} ({len(queries)}) + corpus {corpus.source} ({len(corpus)} passages), "
        f"{distractors_shown(train + dev, num_distractors)} per prompt from "
        f"{'the embedding model' if embedding_model else 'BM25'}"))


def distractors_shown(examples: Sequence[GeneratorExample], asked: int) -> str:
    """What prompts really hold ("2 distractor(s)"), with a warning when the candidates could not supply
    --num_distractors (a small corpus, or fewer non-relevant passages than asked among the retrieved ones)."""
    counts = [len(e.contexts or []) - sum(e.labelled or []) for e in examples if not e.unanswerable]
    low, high = (min(counts), max(counts)) if counts else (asked, asked)
    if low >= asked:
        return f"{asked} distractor(s)"
    logger.warning("--num_distractors %d: only %s non-relevant passage(s) per prompt could be drawn from the retrieved "
                   "candidates; prompts hold fewer contexts than asked", asked,
                   low if low == high else f"{low}-{high}")
    return f"{low if low == high else f'{low}-{high}'} distractor(s) (of {asked} asked)"


def audit_examples(train: list[GeneratorExample], dev: list[GeneratorExample], audit: Audit
                   ) -> tuple[list[GeneratorExample], list[GeneratorExample]]:
    """Chat / instruction examples through the data audit, written back redacted under --pii redact.

    The audit knows passages and labelled queries: each example becomes a query (its question, its
    answer) for leakage and personal information, and every other text it holds (turns, contexts; each
    distinct text once, so a shared system prompt is not a "duplicate passage") a passage. Redaction
    replaces values text by text, with the same placeholder for the same value everywhere.
    """
    texts: list[str] = []
    for example in (*train, *dev):
        texts += [m["content"] for m in example.history if isinstance(m.get("content"), str)]
        texts += list(example.contexts or [])
    unique = list(dict.fromkeys(t for t in texts if t.strip()))
    corpus = Corpus(ids=[f"text {i + 1}" for i in range(len(unique))], texts=unique, source="turns and contexts")

    def as_queries(examples: list[GeneratorExample]) -> list[LabelledQuery]:
        return [LabelledQuery(query=e.question, relevant_ids=[], answer=e.answer, row=i + 1)
                for i, e in enumerate(examples)]

    new_corpus, new_train, new_dev = audit(corpus, as_queries(train), as_queries(dev))
    redacted = dict(zip(corpus.texts, new_corpus.texts))

    def write_back(examples: list[GeneratorExample], queries: list[LabelledQuery]) -> list[GeneratorExample]:
        out = []
        for example, query in zip(examples, queries):
            history = [{**m, "content": redacted.get(m["content"], m["content"])} if isinstance(m.get("content"), str)
                       else m for m in example.history]
            contexts = None if example.contexts is None else [redacted.get(c, c) for c in example.contexts]
            out.append(dataclasses.replace(example, question=query.query, answer=query.answer, history=history,
                                           contexts=contexts))
        return out

    return write_back(train, new_train), write_back(dev, new_dev)

"""Chat-template tokenisation with the loss on the answer only, and truncation that cuts contexts only.

Why not TRL's ``assistant_only_loss``: it needs ``{% generation %}`` markers that Qwen3's template
lacks, and it cannot tell contexts from the question when an example is too long. Here the prompt
is rendered with ``add_generation_prompt=True`` exactly as at inference (``enable_thinking=False``,
so Qwen3 gets its empty think block in the prompt, never in the target) and the target is the rest
of the rendered conversation: the answer and the end-of-turn token, which must be trained or the
model never learns to stop. Whatever the template puts after that token (Qwen's newline) is dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

from ragtune.core.errors import UserError
from ragtune.generation.chat import encode, render_chat
from ragtune.generation.prompt import Messages
from ragtune.train.generator.data import GeneratorExample

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    prompt_ids: list[int]  # what generation starts from (the same prompt, cut the same way)
    truncated: bool = False


class ExampleTokenizer:
    """Turns :class:`GeneratorExample` into input ids and labels no longer than ``max_seq_length``."""

    def __init__(self, tokenizer: Any, max_seq_length: int, end_ids: Sequence[int]) -> None:
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length
        self.end_ids = set(end_ids)

    def completion_ids(self, example: GeneratorExample, prompt_messages: Messages, prompt: str) -> list[int]:
        """Answer tokens up to and including the end-of-turn token."""
        full = render_chat(self.tokenizer, prompt_messages + [{"role": "assistant", "content": example.answer}],
                           add_generation_prompt=False)
        if full.startswith(prompt):
            completion = full[len(prompt):]
        else:  # a template that renders the last turn differently from its generation prompt
            start = full.rfind(example.answer)
            if start < 0:
                raise UserError(f"--base_model: the chat template drops the assistant's answer ({example.source}); "
                                f"pass a template that renders assistant turns with --chat_template")
            completion = full[start:]
        ids = encode(self.tokenizer, completion)
        ends = [i for i, token in enumerate(ids) if token in self.end_ids]
        if not ends:
            names = ", ".join(self.tokenizer.convert_ids_to_tokens(sorted(self.end_ids))) or "none"
            raise UserError(f"--base_model: the chat template does not end the assistant turn with an end token "
                            f"({names}); pass a template that does with --chat_template")
        return ids[:ends[0] + 1]

    def _prompt_ids(self, example: GeneratorExample, contexts: Sequence[str] | None,
                    history: Messages | None = None) -> tuple[Messages, str, list[int]]:
        messages = history if history is not None else example.prompt_messages(contexts)
        prompt = render_chat(self.tokenizer, messages, add_generation_prompt=True)
        return messages, prompt, encode(self.tokenizer, prompt)

    def __call__(self, example: GeneratorExample) -> TokenizedExample:
        messages, prompt, prompt_ids = self._prompt_ids(example, None)
        answer_ids = self.completion_ids(example, messages, prompt)
        limit = self.max_seq_length
        if len(prompt_ids) + len(answer_ids) <= limit:
            return self._result(prompt_ids, answer_ids, False)
        # Too long: what is left without any context (or earlier chat turns) must fit.
        minimal = self._minimal_history(example)
        _, _, bare_ids = self._prompt_ids(example, [], minimal)
        if len(bare_ids) + len(answer_ids) > limit:
            raise UserError(
                f"--max_seq_length {limit} is too small for {example.source}: the prompt without contexts takes "
                f"{len(bare_ids)} tokens and the answer {len(answer_ids)} (question and answer are never cut); "
                f"raise --max_seq_length to at least {len(bare_ids) + len(answer_ids)}")
        if example.contexts is None:
            return self._result(self._cut_history(example, answer_ids), answer_ids, True)
        return self._result(self._cut_contexts(example, answer_ids, len(prompt_ids)), answer_ids, True)

    @staticmethod
    def _minimal_history(example: GeneratorExample) -> Messages | None:
        if example.contexts is not None:
            return None
        last_user = max(i for i, m in enumerate(example.history) if m["role"] == "user")
        return [m for m in example.history[:last_user] if m["role"] == "system"] + example.history[last_user:]

    def _cut_history(self, example: GeneratorExample, answer_ids: list[int]) -> list[int]:
        """Chat examples: drop the oldest non-system turns until it fits (the last user turn stays)."""
        history = list(example.history)
        while True:
            _, _, ids = self._prompt_ids(example, None, history)
            if len(ids) + len(answer_ids) <= self.max_seq_length:
                return ids
            first = next(i for i, m in enumerate(history) if m["role"] != "system")
            history.pop(first)

    def _cut_contexts(self, example: GeneratorExample, answer_ids: list[int], full_length: int) -> list[int]:
        """Cut contexts to fit: distractors first, then labelled passages (see :func:`context_caps`).

        Token counts of a context alone and inside the rendered prompt can differ by a token at the
        edges, so the cut is re-checked on the real rendering and deepened until it fits.
        """
        contexts = example.contexts or []
        labelled = example.labelled or [False] * len(contexts)
        encoded = [self.tokenizer(c, add_special_tokens=False, return_offsets_mapping=True) for c in contexts]
        lengths = [len(e["input_ids"]) for e in encoded]
        excess = full_length + len(answer_ids) - self.max_seq_length
        for _ in range(20):
            caps = context_caps(lengths, labelled, excess)
            cut = [text if n <= cap else text[:e["offset_mapping"][cap - 1][1]] if cap > 0 else ""
                   for text, n, cap, e in zip(contexts, lengths, caps, encoded)]
            _, _, ids = self._prompt_ids(example, [c for c in cut if c.strip()])
            over = len(ids) + len(answer_ids) - self.max_seq_length
            if over <= 0:
                return ids
            excess += max(over, 1)
        _, _, ids = self._prompt_ids(example, [])
        return ids

    def _result(self, prompt_ids: list[int], answer_ids: list[int], truncated: bool) -> TokenizedExample:
        return TokenizedExample(input_ids=prompt_ids + answer_ids,
                                labels=[IGNORE_INDEX] * len(prompt_ids) + list(answer_ids),
                                prompt_ids=prompt_ids, truncated=truncated)


def context_caps(lengths: Sequence[int], labelled: Sequence[bool], excess: int) -> list[int]:
    """Per context, how many tokens it keeps so that ``excess`` tokens go.

    Distractors give way first (the answer is in the labelled passages: cutting those first would
    teach the model to answer without support); within a group every context is cut to one shared
    cap, so short ones stay whole and long ones lose their ends.
    """
    caps = list(lengths)
    groups = [[i for i, rel in enumerate(labelled) if not rel], [i for i, rel in enumerate(labelled) if rel]]
    for group in groups:
        if excess <= 0:
            break
        total = sum(lengths[i] for i in group)
        cap = water_fill_cap([lengths[i] for i in group], total - excess)
        for i in group:
            caps[i] = min(lengths[i], cap)
        excess -= total - sum(caps[i] for i in group)
    return caps


def water_fill_cap(lengths: Sequence[int], target: int) -> int:
    """Largest cap with sum(min(length, cap)) <= target (0 when even nothing fits)."""
    if target <= 0:
        return 0
    if sum(lengths) <= target:
        return max(lengths, default=0)
    low, high = 0, max(lengths)
    while low < high:
        mid = (low + high + 1) // 2
        if sum(min(n, mid) for n in lengths) <= target:
            low = mid
        else:
            high = mid - 1
    return low


def tokenize_examples(examples: Sequence[GeneratorExample], example_tokenizer: ExampleTokenizer
                      ) -> tuple[list[TokenizedExample], int]:
    """All examples, and how many had to be cut."""
    tokenized = [example_tokenizer(e) for e in examples]
    return tokenized, sum(t.truncated for t in tokenized)


def to_dataset(tokenized: Sequence[TokenizedExample]):
    """A datasets.Dataset with the two columns the model needs (the collator pads and masks)."""
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": [t.input_ids for t in tokenized], "labels": [t.labels for t in tokenized]})


def show_trained_part(tokenizer: Any, example: TokenizedExample) -> str:
    """The rendered example with the trained (labelled) tokens between >>> and <<<."""
    start = len(example.prompt_ids)
    prompt = tokenizer.decode(example.input_ids[:start], skip_special_tokens=False)
    trained = tokenizer.decode(example.input_ids[start:], skip_special_tokens=False)
    return f"{prompt}>>>{trained}<<<"

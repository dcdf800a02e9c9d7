"""Chat rendering and token ids shared by training (labels) and generation (prompts, stop tokens)."""

from __future__ import annotations

from typing import Any

from ragtune.generation.prompt import Messages

# End-of-turn tokens of common chat templates (ChatML/Qwen/SmolLM, Llama 3, Gemma, Phi-3).
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")


def render_chat(tokenizer: Any, messages: Messages, add_generation_prompt: bool) -> str:
    """The model's own chat template; thinking off (Qwen3), ignored by templates without the switch."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                         enable_thinking=False)


def end_of_turn_ids(tokenizer: Any, generation_config: Any = None) -> list[int]:
    """Token ids that end an assistant turn: the tokenizer's eos, the generation config's, known chat ones."""
    ids: list[int] = []

    def add(value: Any) -> None:
        for item in (value if isinstance(value, (list, tuple)) else [value]):
            if isinstance(item, int) and item >= 0 and item not in ids:
                ids.append(item)

    add(tokenizer.eos_token_id)
    if generation_config is not None:
        add(getattr(generation_config, "eos_token_id", None))
    vocab = tokenizer.get_vocab()
    for token in END_OF_TURN_TOKENS:
        if token in vocab:
            add(vocab[token])
    return ids


def encode(tokenizer: Any, text: str) -> list[int]:
    # The rendered template already holds BOS/special tokens as text: add none.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


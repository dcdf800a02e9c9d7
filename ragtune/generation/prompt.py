"""The RAG prompt: one function builds it for training, dev evaluation and evaluate_rag.py.

A model is only as good as the prompt it is evaluated on matches the one it was trained on, so
every caller builds its chat messages here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ragtune.core.io import write_json
from ragtune.core.model_specs import saved_metrics

Messages = list[dict[str, str]]

DEFAULT_SYSTEM_PROMPT = (
    "Bạn là trợ lý trả lời câu hỏi dựa trên các đoạn văn được cung cấp. Chỉ sử dụng thông tin trong các đoạn văn; "
    "trả lời ngắn gọn, chính xác, bằng tiếng Việt. Nếu các đoạn văn không chứa câu trả lời, hãy trả lời: "
    "\"Không có thông tin trong tài liệu được cung cấp.\"")
# Beside a trained adapter: the system prompt it was trained with, exactly (see write_prompt_settings).
PROMPT_SETTINGS_FILE = "ragtune_generation.json"
# The target of an unanswerable example: the sentence the default system prompt asks for.
DEFAULT_UNANSWERABLE_ANSWER = "Không có thông tin trong tài liệu được cung cấp."


def format_user_message(question: str, contexts: Sequence[str]) -> str:
    """Numbered contexts, then the question (Vietnamese labels, matching the default system prompt)."""
    if not contexts:
        return f"Câu hỏi: {question}"
    numbered = "\n\n".join(f"[{i}] {text}" for i, text in enumerate(contexts, start=1))
    return f"Ngữ cảnh:\n{numbered}\n\nCâu hỏi: {question}"


def rag_messages(question: str, contexts: Sequence[str], system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> Messages:
    """System prompt (omitted when empty or None), and one user turn holding the contexts and the question."""
    messages: Messages = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": format_user_message(question, contexts)})
    return messages


def write_prompt_settings(folder: str | Path, system_prompt: str | None) -> None:
    """Save the system prompt an adapter is trained with, exactly, beside the adapter.

    metrics.json records it too, but as every shown text, masked under ``--pii warn``: a prompt with a hotline
    number would come back as ``09•••••678`` and evaluation would prompt with other words than training.
    """
    write_json(Path(folder) / PROMPT_SETTINGS_FILE, {"system_prompt": system_prompt or ""})


def trained_system_prompt(adapter_dir: str | None) -> str | None:
    """The system prompt an adapter was trained with ("" when none), else the default.

    evaluate_rag.py and the pipeline build their generator prompts with this, so a --system_prompt used in
    training is used in evaluation and prediction too. Read from :data:`PROMPT_SETTINGS_FILE`; an adapter saved
    before that file existed has it in its metrics.json config.
    """
    if adapter_dir:
        try:
            saved = json.loads((Path(adapter_dir) / PROMPT_SETTINGS_FILE).read_text(encoding="utf-8"))
            return str(saved["system_prompt"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        config = saved_metrics(adapter_dir).get("config")
        if isinstance(config, dict) and "system_prompt" in config:
            return config["system_prompt"] or ""  # trained without one: "" (None would mean the default)
    return DEFAULT_SYSTEM_PROMPT

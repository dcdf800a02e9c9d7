"""ragtune.generation: the RAG prompt, the system prompt an adapter was trained with, and chat rendering."""

from __future__ import annotations

import json

from ragtune.evaluate.answers import answer_messages
from ragtune.generation.chat import end_of_turn_ids
from ragtune.generation.inference import load_tokenizer, prompt_ids_for
from ragtune.generation.prompt import (
    DEFAULT_SYSTEM_PROMPT,
    format_user_message,
    rag_messages,
    trained_system_prompt,
    write_prompt_settings,
)


def test_contexts_are_numbered_before_the_question_and_an_empty_system_prompt_is_left_out():
    assert format_user_message("Ai?", ["một", "hai"]) == "Ngữ cảnh:\n[1] một\n\n[2] hai\n\nCâu hỏi: Ai?"
    assert format_user_message("Ai?", []) == "Câu hỏi: Ai?"
    assert rag_messages("Ai?", ["một"]) == [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                                           {"role": "user", "content": "Ngữ cảnh:\n[1] một\n\nCâu hỏi: Ai?"}]
    for empty in ("", None):
        assert [m["role"] for m in rag_messages("Ai?", ["một"], empty)] == ["user"]


def test_the_system_prompt_an_adapter_was_trained_with_is_used(tmp_path):
    assert trained_system_prompt(None) == DEFAULT_SYSTEM_PROMPT
    assert trained_system_prompt(str(tmp_path)) == DEFAULT_SYSTEM_PROMPT  # no metrics.json
    (tmp_path / "metrics.json").write_text(json.dumps({"config": {"system_prompt": "Trả lời ngắn."}}))
    assert trained_system_prompt(str(tmp_path)) == "Trả lời ngắn."
    (tmp_path / "metrics.json").write_text(json.dumps({"config": {"system_prompt": ""}}))
    # Trained with --system_prompt '': evaluate_rag.py's prompt has no system turn either (issue 17, item 5).
    assert [m["role"] for m in answer_messages("Ai?", ["một"], trained_system_prompt(str(tmp_path)))] == ["user"]
    # The exact prompt saved beside the adapter wins over metrics.json's shown (masked) copy.
    write_prompt_settings(tmp_path, "Gọi 0912 345 678.")
    (tmp_path / "metrics.json").write_text(json.dumps({"config": {"system_prompt": "Gọi 09•••••678."}}))
    assert trained_system_prompt(str(tmp_path)) == "Gọi 0912 345 678."


def test_prompt_ids_end_with_the_assistant_turn_and_thinking_off(tiny_qwen2, tiny_qwen3):
    messages = rag_messages("RAIC ra đời khi nào?", ["RAIC ra đời năm 2013."])
    for folder, ending in ((tiny_qwen2, "<|im_start|>assistant\n"),
                           (tiny_qwen3, "<|im_start|>assistant\n<think>\n\n</think>\n\n")):
        tokenizer = load_tokenizer(str(folder))
        prompt = tokenizer.decode(prompt_ids_for(tokenizer, messages), skip_special_tokens=False)
        assert prompt.endswith(ending) and "RAIC ra đời khi nào?" in prompt
        assert tokenizer.convert_tokens_to_ids("<|im_end|>") in end_of_turn_ids(tokenizer)

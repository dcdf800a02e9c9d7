"""What a finished run leaves next to the adapter: the model card and the results table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ragtune.core.answer_metrics import REFERENCE_ANSWER_METRICS


def metrics_table(before: dict[str, float], after: dict[str, float]) -> str:
    rows = [("metric", "base model", "fine-tuned")] + [
        (name, f"{before.get(name, float('nan')):.4f}", f"{after.get(name, float('nan')):.4f}")
        for name in REFERENCE_ANSWER_METRICS]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_adapter_card(output_dir: str | Path, base_model: str, before: dict[str, float], after: dict[str, float],
                       dev_queries: int, config: dict[str, Any]) -> Path:
    """README.md of the adapter: base model, how to load it, dev answer metrics before and after."""
    from huggingface_hub import EvalResult, ModelCardData

    results = [EvalResult(task_type="text-generation", dataset_type="dev", dataset_name="held-out dev queries",
                          metric_type=name, metric_name=name, metric_value=round(float(after[name]), 4))
               for name in REFERENCE_ANSWER_METRICS if after.get(name) is not None]
    gguf = base_model.endswith(".gguf")
    data = ModelCardData(base_model=None if gguf else base_model, library_name="peft", language=["vi"],
                         tags=["lora", "rag", "ragtune", "text-generation"], pipeline_tag="text-generation",
                         model_name=Path(output_dir).name, eval_results=results or None)
    load_base = (f"AutoModelForCausalLM.from_pretrained({str(Path(base_model).parent)!r}, "
                 f"gguf_file={Path(base_model).name!r})" if gguf else f"AutoModelForCausalLM.from_pretrained({base_model!r})")
    table = "\n".join(["| metric | base model | fine-tuned |", "|---|---|---|"] + [
        f"| {name} | {before.get(name, float('nan')):.4f} | {after.get(name, float('nan')):.4f} |"
        for name in REFERENCE_ANSWER_METRICS])
    content = f"""---
{data.to_yaml()}
---

# LoRA adapter for {base_model} (RAG answer generator)

Fine-tuned with `fine_tune_generator.py` (ragtune): LoRA r={config.get('lora_r')}, alpha={config.get('lora_alpha')},
targets {' '.join(config.get('lora_target') or [])}{', QLoRA 4-bit NF4' if config.get('qlora') else ''}.
The model answers from the numbered contexts in the prompt built by `ragtune.generation.prompt.rag_messages`.

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = {load_base}
model = PeftModel.from_pretrained(base, "PATH_OR_REPO_OF_THIS_ADAPTER")
tokenizer = AutoTokenizer.from_pretrained("PATH_OR_REPO_OF_THIS_ADAPTER")
```

## Dev answer metrics

Greedy answers to {dev_queries} held-out queries, compared with their reference answers (ROUGE-L F1 on
Unicode word tokens, corpus BLEU-4, share of answers containing the reference):

{table}
"""
    path = Path(output_dir) / "README.md"
    path.write_text(content, encoding="utf-8")
    return path

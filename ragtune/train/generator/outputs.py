"""What a finished run leaves next to the adapter: the model card and the results table."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ragtune.core.answer_metrics import REFERENCE_ANSWER_METRICS
from ragtune.core.model_card import write_card
from ragtune.core.model_specs import is_gguf
from ragtune.generation.inference import base_load_code
from ragtune.train.generator.data import GeneratorExample


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
    gguf = is_gguf(base_model)
    data = ModelCardData(base_model=None if gguf else base_model, library_name="peft", language=["vi"],
                         tags=["lora", "rag", "ragtune", "text-generation"], pipeline_tag="text-generation",
                         model_name=Path(output_dir).name, eval_results=results or None)
    load_base = base_load_code(base_model)
    table = "\n".join(["| metric | base model | fine-tuned |", "|---|---|---|"] + [
        f"| {name} | {before.get(name, float('nan')):.4f} | {after.get(name, float('nan')):.4f} |"
        for name in REFERENCE_ANSWER_METRICS])
    body = f"""# LoRA adapter for {base_model} (RAG answer generator)

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
    return write_card(Path(output_dir) / "README.md", data, body)


def describe_run(args: Any, data: Any, counts: Any, train: tuple[int, int], dev: tuple[int, int], evaluator: Any,
                 memory: dict[str, float], longest: int, metric_key: str) -> dict[str, Any]:
    """The start-up summary's generator-specific part (``TrainingRun.log_summary``'s keyword arguments).

    ``train`` and ``dev``: (examples, examples whose contexts were shortened to fit --max_seq_length);
    ``longest``: the longest example's tokens, which set the activation memory.
    """
    return {
        "model": f"{args.base_model}{' (4-bit NF4, double quantisation)' if args.qlora else ''}, "
                 f"{counts.total / 1e6:.1f}M parameters",
        "fields": {
            "LoRA": f"r {args.lora_r}, alpha {args.lora_alpha}, dropout {args.lora_dropout:g}, targets "
                    f"{' '.join(args.lora_target)}: {counts.trainable / 1e6:.2f}M trainable = "
                    f"{100 * counts.share:.3f}%",
            "data": data.description,
            "split": f"train {train[0]} examples ({sum(e.unanswerable for e in data.train)} unanswerable), "
                     f"dev {dev[0]}",
            "truncated": f"{train[1]} train / {dev[1]} dev example(s) longer than --max_seq_length "
                         f"{args.max_seq_length}: contexts shortened",
            "dev answers": (f"{len(evaluator)} generated per evaluation (greedy, <= {args.max_new_tokens} new "
                            f"tokens), best adapter by {metric_key}") if evaluator else "none (--dev_ratio 0)",
            "GPU memory (est.)": f"weights {memory['weights']:.2f} GiB, LoRA state {memory['lora_state']:.2f} GiB, "
                                 f"activations {memory['activations']:.2f} GiB (batch {args.batch_size} x "
                                 f"{longest} tokens, the longest example"
                                 f"{', checkpointed' if args.gradient_checkpointing else ''}), total ~"
                                 f"{memory['total']:.1f} GiB per process",
        },
    }


def dev_example_rows(examples: Sequence[GeneratorExample]) -> list[dict[str, Any]]:
    """The held-out dev examples for dev_queries.csv: where each came from, its question and reference answer."""
    return [{"source": e.source, "Query": e.question, "Ground truth answer": e.answer} for e in examples]

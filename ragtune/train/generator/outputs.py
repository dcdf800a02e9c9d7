"""What a finished run leaves next to the adapter: the model card and the results table."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ragtune.core.answer_metrics import REFERENCE_ANSWER_METRICS
from ragtune.core.model_card import (
    CardColumn,
    evaluation_table,
    headline,
    metric_label,
    metric_type,
    portable_model_name,
    write_card,
)
from ragtune.generation.inference import base_load_code
from ragtune.generation.prompt import format_user_message
from ragtune.train.cards import card_metadata, provenance_lines
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
    """README.md of the adapter: metadata (base model as a Hub id, language, license, model-index), the main dev
    metric as the headline, the prompt format and system prompt it was trained with, a load snippet that runs."""
    from huggingface_hub import EvalResult, ModelCardData

    name = Path(output_dir).name
    main = str(config.get("metric_for_best_model") or "rouge_l")
    keys = [main] * (main in after) + [k for k in REFERENCE_ANSWER_METRICS if k != main and after.get(k) is not None]
    dataset = config.get("dataset_name")
    results = [EvalResult(task_type="text-generation", task_name="RAG answer generation", dataset_type=dataset or
                          "custom", dataset_name=dataset or f"held-out dev queries ({dev_queries})", dataset_split="dev",
                          metric_type=metric_type(key), metric_name=metric_label(key),
                          metric_value=round(float(after[key]), 4)) for key in keys]
    data = ModelCardData(**card_metadata({**config, "base_model": base_model}), library_name="peft",
                         tags=["ragtune", "rag", "lora", "text-generation"], pipeline_tag="text-generation",
                         model_name=name, eval_results=results or None)
    hub_id = data.base_model
    base_name = hub_id or portable_model_name(base_model)
    columns = [CardColumn("base model", before), CardColumn("fine-tuned (this adapter)", after, is_model=True)]
    summary = headline(main, columns, dev_queries, "dev")
    table = evaluation_table(columns, list(dict.fromkeys([main, *REFERENCE_ANSWER_METRICS])), main)
    body = f"""# {name}: LoRA adapter for {base_name} (RAG answer generator)

{summary}

Fine-tuned with `fine_tune_generator.py` (ragtune): LoRA r={config.get('lora_r')}, alpha={config.get('lora_alpha')},
targets {' '.join(config.get('lora_target') or [])}{', QLoRA 4-bit NF4' if config.get('qlora') else ''}. It answers a
question from numbered passages (the contexts a retriever found), in the prompt format below.

{prompt_format_section(config.get('system_prompt'))}

## Usage

Load the base model, put the adapter on it, and build the prompt exactly as in training (the adapter folder holds
the tokenizer with its chat template and the generation config: greedy, stops at the end of the turn):

```python
{adapter_snippet(name, hub_id or base_model, config.get('system_prompt'))}```

## Dev answer metrics

Greedy answers to {dev_queries} held-out queries, compared with their reference answers (ROUGE-L F1 on Unicode word
tokens, corpus BLEU-4, share of answers containing the reference). The best checkpoint was chosen on these queries:
`evaluate_rag.py` on a held-out test set gives the numbers to trust.

{table}

{provenance_lines({**config, "base_model": base_model})}
"""
    return write_card(Path(output_dir) / "README.md", data, body)


def prompt_format_section(system_prompt: str | None) -> str:
    """The card's "Prompt format" section: the system prompt and the user turn the adapter was trained on."""
    system = (f"System prompt:\n\n```text\n{system_prompt}\n```" if system_prompt else
              "No system prompt (trained with `--system_prompt ''`).")
    user = format_user_message("<question>", ["<passage 1>", "<passage 2>"])
    return (f"## Prompt format\n\n{system}\n\nUser turn (the passages numbered from 1, then the question), rendered "
            f"with the tokenizer's chat template (thinking off for Qwen3):\n\n```text\n{user}\n```\n\nThe answer "
            f"is the assistant turn.")


def adapter_snippet(adapter: str, base_model: str, system_prompt: str | None) -> str:
    """Python that loads the adapter on its base and answers one question with the training prompt (transformers
    and peft only); ``adapter`` and the base model as the card names them (a Hub id, else a folder name)."""
    system = f"SYSTEM_PROMPT = {system_prompt!r}\n" if system_prompt else "SYSTEM_PROMPT = None  # trained without one\n"
    return f"""from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

ADAPTER = {adapter!r}
base = {base_load_code(base_model)}
model = PeftModel.from_pretrained(base, ADAPTER)
tokenizer = AutoTokenizer.from_pretrained(ADAPTER)
{system}

def user_turn(question, passages):
    numbered = "\\n\\n".join(f"[{{i}}] {{text}}" for i, text in enumerate(passages, start=1))
    return f"Ngữ cảnh:\\n{{numbered}}\\n\\nCâu hỏi: {{question}}" if passages else f"Câu hỏi: {{question}}"


def answer(question, passages):
    messages = ([{{"role": "system", "content": SYSTEM_PROMPT}}] if SYSTEM_PROMPT else []) + [
        {{"role": "user", "content": user_turn(question, passages)}}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                           enable_thinking=False)
    inputs = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(model.device)
    output = model.generate(**inputs, generation_config=GenerationConfig.from_pretrained(ADAPTER))
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


print(answer("Câu hỏi của người dùng?", ["Đoạn văn thứ nhất.", "Đoạn văn thứ hai."]))
"""


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

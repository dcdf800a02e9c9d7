#!/usr/bin/env python
"""Test-only launcher: run a fine-tuning script's ``main()`` with observing callbacks.

    python tests/launch_script.py fine_tune_bge_m3.py [--record DIR] [--sigterm_at_step N] -- <script flags>

and the same under ``accelerate launch ... tests/launch_script.py ...`` (how transformers tests its
distributed Trainer: a test script, not switches in the product). Every rank writes
``DIR/train.rank<R>.json`` with what the tests compare: the step training started from (a resumed run
starts from its checkpoint's), the steps it trained, the weights after the last step and after the best
model was loaded, the training rows, the dev split and, for the embedding script, what the loss
contrasted each query with. ``--sigterm_at_step N`` has rank 0 send a real SIGTERM during step N: to the
launcher under ``accelerate launch`` (which forwards it to every rank, as on a disconnect), else to itself.
The process exits with the script's own exit code (``run_main``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

REPO = Path(__file__).resolve().parent.parent


def weights_checksum(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer, in name order (equal models give equal sums)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class Recorder(TrainerCallback):
    """Records how a run trained; ``record`` is the dict, written to ``directory`` (if given) at the end."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory else None
        self.record: dict[str, Any] = {"steps_trained": 0}

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        rank, world = _rank_and_world()
        self.record.update(rank=rank, world_size=world, start_step=state.global_step, max_steps=state.max_steps)
        if train_dataloader is not None:
            self.record["steps_per_epoch"] = len(train_dataloader) // max(1, args.gradient_accumulation_steps)
            dataset = getattr(train_dataloader, "dataset", None)
            if hasattr(dataset, "to_dict"):
                self.record["train_rows"] = dataset.to_dict()
        return control

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.record["steps_trained"] += 1
        self.record["last_step"] = state.global_step
        self.record["last_step_weights"] = weights_checksum(model)
        return control

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.record.update(global_step=state.global_step, final_weights=weights_checksum(model))
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"train.rank{self.record['rank']}.json"
            path.write_text(json.dumps(self.record, default=str))
        return control


class SigtermAt(TrainerCallback):
    """A real SIGTERM during optimizer step ``step``, as a Colab/Kaggle disconnect sends it.

    Sent as the step begins: the run must finish that step, checkpoint it, and stop.
    """

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        rank, world = _rank_and_world()
        if state.global_step + 1 == self.step and rank == 0:
            os.kill(os.getppid() if world > 1 else os.getpid(), signal.SIGTERM)
        return control


def record_dev_split(recorder: Recorder) -> None:
    """Record the dev queries the script splits off (every rank must hold the same)."""
    import ragtune.core.data

    original = ragtune.core.data.split_queries

    def recording(*args: Any, **kwargs: Any):
        train, dev = original(*args, **kwargs)
        recorder.record["dev_queries"] = [q.query for q in dev]
        return train, dev

    ragtune.core.data.split_queries = recording


def record_contrasts(recorder: Recorder) -> None:
    """Record, per micro-batch, what MultipleNegativesRankingLoss contrasted each query with.

    Per step: the number of local rows and of candidate passages (gathered from every rank with
    ``gather_across_devices``), a checksum of each rank's slice of the gathered candidates and of this
    rank's own embeddings, so a test can check that the candidates came from every rank and that hard
    negatives stayed aligned with their queries.
    """
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    original = MultipleNegativesRankingLoss.compute_loss_from_embeddings
    records = recorder.record.setdefault("loss_records", [])

    def recording(self, embeddings, labels):
        seen = []
        similarity = self.similarity_fct

        def spy(a, b):  # the first call is queries x all candidates (query_to_doc)
            if not seen:
                seen.append(b.detach())
            return similarity(a, b)

        self.similarity_fct = spy
        try:
            loss = original(self, embeddings, labels)
        finally:
            self.similarity_fct = similarity
        local, columns, candidates = embeddings[0].shape[0], len(embeddings) - 1, seen[0]
        per_column = candidates.shape[0] // columns
        records.append({
            "local_rows": local, "candidates": candidates.shape[0], "columns": columns,
            "gathered": [[float(candidates[c * per_column + r * local:c * per_column + (r + 1) * local].sum())
                          for r in range(per_column // local)] for c in range(columns)],
            "local": [float(e.detach().sum()) for e in embeddings[1:]],
        })
        return loss

    MultipleNegativesRankingLoss.compute_loss_from_embeddings = recording


def main() -> None:
    argv = sys.argv[1:]
    script, argv = argv[0], argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    options, script_args = argv[:split], argv[split + 1:]
    record_dir, sigterm_at = None, 0
    for i in range(0, len(options), 2):
        if options[i] == "--record":
            record_dir = options[i + 1]
        elif options[i] == "--sigterm_at_step":
            sigterm_at = int(options[i + 1])
        else:
            raise SystemExit(f"launch_script.py: unknown option {options[i]}")

    sys.path.insert(0, str(REPO))
    recorder = Recorder(record_dir)
    record_dev_split(recorder)  # before the script imports split_queries
    record_contrasts(recorder)
    spec = importlib.util.spec_from_file_location(Path(script).stem, REPO / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    callbacks = [recorder] + ([SigtermAt(sigterm_at)] if sigterm_at else [])
    from ragtune.core.errors import run_main

    run_main(lambda args: module.main(args, callbacks=callbacks), script_args)


if __name__ == "__main__":
    main()

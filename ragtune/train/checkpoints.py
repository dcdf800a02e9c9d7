"""The output dir and resuming: what a finished run, a complete checkpoint and a resume point are."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from ragtune.core.errors import UserError

logger = logging.getLogger(__name__)


FINISHED_MARKER = "metrics.json"


CHECKPOINT_PREFIX = "checkpoint-"


def check_output_dir(output_dir: str | Path, overwrite: bool) -> bool:
    """Refuse a finished model's dir unless --overwrite_output_dir; read-only. True if it holds a finished run."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"--output_dir {output_dir} exists and is not a directory")
    finished = (output_dir / FINISHED_MARKER).exists()
    if finished and not overwrite:
        raise UserError(f"--output_dir {output_dir} already holds a finished model; pass --overwrite_output_dir to "
                        f"train again there, or choose another --output_dir")
    return finished


def clear_finished_run(output_dir: str | Path) -> None:
    """Remove a finished run's checkpoints and marker before training over it (--overwrite_output_dir).

    Called only once the new run's data, flags and model have all been validated: a run that fails
    before that leaves the previous one byte-identical. The previous final model's files stay until
    the new final model replaces them.
    """
    output_dir = Path(output_dir)
    for child in output_dir.iterdir():
        if child.name.startswith(CHECKPOINT_PREFIX) and child.is_dir():
            shutil.rmtree(child)
    (output_dir / FINISHED_MARKER).unlink(missing_ok=True)
    logger.info("--overwrite_output_dir: removed the previous run's checkpoints and %s from %s", FINISHED_MARKER,
                output_dir)


def is_complete_checkpoint(path: Path) -> bool:
    """A checkpoint is complete once the Trainer wrote trainer_state.json (its last file) and it parses."""
    state = path / "trainer_state.json"
    if not state.is_file() or not (path / "optimizer.pt").is_file() or not (path / "scheduler.pt").is_file():
        return False
    try:
        json.loads(state.read_text())
    except (OSError, ValueError):
        return False
    return True


def find_resumable_checkpoint(output_dir: str | Path) -> Path | None:
    """Newest complete ``checkpoint-N`` in ``output_dir``; half-written ones are skipped with a warning."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    candidates = []
    for child in output_dir.iterdir():
        suffix = child.name[len(CHECKPOINT_PREFIX):]
        if child.is_dir() and child.name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit():
            candidates.append((int(suffix), child))
    for _, path in sorted(candidates, reverse=True):
        if is_complete_checkpoint(path):
            return path
        logger.warning("Skipping incomplete checkpoint %s (interrupted while saving)", path)
    return None


def warn_if_process_count_changed(checkpoint: str | Path | None, processes: int) -> None:
    """Resuming is exact only with the process count that wrote the checkpoint (one RNG file per rank)."""
    if checkpoint is None:
        return
    written_by = len(list(Path(checkpoint).glob("rng_state_*.pth"))) or 1
    if written_by != processes:
        logger.warning("%s was written by %d process(es) and this run has %d: training continues, but with other "
                       "batches than the interrupted run would have seen (resume with --num_processes %d for an "
                       "exact continuation)", checkpoint, written_by, processes, written_by)


def resolve_resume(resume: str, output_dir: str | Path, overwrite_finished: bool) -> str | None:
    """Turn --resume_from_checkpoint into a checkpoint path for ``Trainer.train`` (None = fresh start).

    ``overwrite_finished``: --overwrite_output_dir over a finished run starts fresh; over an
    interrupted one (no metrics.json yet) the same command resumes it, like any other run.
    """
    if resume in (None, "", "none", "None", "false", "False"):
        return None
    if resume == "auto":
        checkpoint = None if overwrite_finished else find_resumable_checkpoint(output_dir)
        if checkpoint is None:
            logger.info("No checkpoint to resume from in %s: starting fresh", output_dir)
            return None
        logger.info("Resuming from %s", checkpoint)
        return str(checkpoint)
    path = Path(resume)
    if not path.is_dir():
        raise UserError(f"--resume_from_checkpoint: no such checkpoint directory: {path}")
    if not is_complete_checkpoint(path):
        raise UserError(f"--resume_from_checkpoint: {path} is not a complete checkpoint (no trainer_state.json, "
                        f"optimizer.pt or scheduler.pt)")
    return str(path)


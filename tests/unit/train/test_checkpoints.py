"""Checkpoints: --resume_from_checkpoint auto takes the newest complete one."""

from __future__ import annotations

from ragtune.train.checkpoints import find_resumable_checkpoint


def test_auto_resume_skips_a_half_written_checkpoint(tmp_path):
    for step, complete in [(4, True), (8, False)]:
        ckpt = tmp_path / f"checkpoint-{step}"
        ckpt.mkdir()
        if complete:
            for name in ("optimizer.pt", "scheduler.pt"):
                (ckpt / name).write_bytes(b"x")
            (ckpt / "trainer_state.json").write_text("{}")
        else:
            (ckpt / "model.safetensors").write_bytes(b"partial")
    assert find_resumable_checkpoint(tmp_path) == tmp_path / "checkpoint-4"

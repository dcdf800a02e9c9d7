"""Work across `accelerate launch` processes: which one is the main process, and computing once on it for all."""

from __future__ import annotations

import os
from typing import Callable, TypeVar

T = TypeVar("T")


def local_rank_is_main() -> bool:
    """True on the main process, before torch.distributed is initialised (reads launcher env vars)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def is_distributed() -> bool:
    import torch  # imported here: local_rank_is_main runs while the flags are checked, before torch is needed

    return torch.distributed.is_available() and torch.distributed.is_initialized()


def is_main_process() -> bool:
    import torch

    return not is_distributed() or torch.distributed.get_rank() == 0


def compute_on_main_and_share(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and give every rank its result (mining, splits: one truth for all ranks)."""
    if not is_distributed():
        return fn()
    import torch

    payload = [fn() if is_main_process() else None]
    torch.distributed.broadcast_object_list(payload, src=0)
    return payload[0]


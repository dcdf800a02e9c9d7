"""One run per output dir: a lock file taken before anything in the dir is written.

Two runs writing one ``--output_dir`` mix silently: the final weights of one, the ``metrics.json`` of the
other, and neither fails. The lock file (``.ragtune.lock``: process id, host, start time, command) is created
atomically (``O_EXCL``); a second run meets it and stops with one line naming the first. A lock left by a
process that no longer runs on this host (a killed notebook kernel) is taken over with a warning. A lock from
another host cannot be checked: the user is told to remove it if no run is writing there. Under
``accelerate launch`` only the main process takes it (one writer per dir).

Not ``filelock``/``fcntl.flock``: an advisory lock vanishes with its process, so it cannot tell the user *which*
run holds the dir, and flock is unreliable on the network file systems Colab/Kaggle users mount (Drive).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from ragtune.core.errors import UserError, release_when_main_ends

logger = logging.getLogger(__name__)

LOCK_NAME = ".ragtune.lock"


class OutputDirLock:
    """The lock on one output dir; :meth:`acquire` once validation passed, released at exit (or :meth:`release`).

    If the dir did not exist, acquiring creates it; releasing removes it again when the run left it empty,
    so a run that fails early leaves no trace.
    """

    def __init__(self, output_dir: str | os.PathLike, flag: str = "--output_dir") -> None:
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / LOCK_NAME
        self.flag = flag
        self.held = False
        self._created_dir = False

    def acquire(self) -> "OutputDirLock":
        if self.held:
            return self
        if not self.output_dir.exists():
            self.output_dir.mkdir(parents=True)
            self._created_dir = True
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(record, handle)
            self.held = True
            release_when_main_ends(self.release)
            atexit.register(self.release)
            return self
        raise UserError(f"{self.flag} {self.output_dir}: could not take {self.path}")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        self.path.unlink(missing_ok=True)
        if self._created_dir and self.output_dir.is_dir() and not any(self.output_dir.iterdir()):
            self.output_dir.rmdir()

    def __enter__(self) -> "OutputDirLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _take_over_if_stale(self) -> None:
        """Remove a lock whose process is gone; raise UserError naming the run that holds a live one."""
        holder = read_lock(self.path)
        pid, host = holder.get("pid"), holder.get("host")
        described = (f"pid {pid} on {host}, started {holder.get('started', '?')}: "
                     f"{holder.get('command', '?')}") if pid else "a lock file that cannot be read"
        if host == socket.gethostname() and pid == os.getpid():
            # This process's own lock, from a run that ended without exiting (a notebook cell, a test): runs in
            # one process are sequential.
            self.path.unlink(missing_ok=True)
            return
        if host == socket.gethostname() and isinstance(pid, int) and not process_is_running(pid):
            logger.warning("%s %s: taking over the lock of a run that is no longer running (%s)", self.flag,
                           self.output_dir, described)
            self.path.unlink(missing_ok=True)
            return
        if host not in (None, socket.gethostname()):
            raise UserError(f"{self.flag} {self.output_dir} is locked by a run on another machine ({described}); "
                            f"if no run is writing there any more, delete {self.path}")
        raise UserError(f"{self.flag} {self.output_dir} is in use by another run ({described}); wait for it to "
                        f"finish or choose another {self.flag}")


def read_lock(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def process_is_running(pid: int) -> bool:
    """Whether a process with this id exists on this host (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

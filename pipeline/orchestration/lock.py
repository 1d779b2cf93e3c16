"""One run per task at a time, safe under a scheduler.

The lock is ``data/<task>/.lock`` held with ``fcntl.flock``: the kernel drops it when the holder
dies, however it dies, so a lock left by a killed run is detected as stale (the file is there, the
flock is free) and taken over. The file records who holds it, for the message a second run prints.
Why not ``filelock``: it does not tell a stale lock from a live one, or report who holds it.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

from pipeline.errors import LockedError


class TaskLock:
    """``with TaskLock(path): ...`` — raises LockedError when another live run holds it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None
        self.stale_holder: dict | None = None  # set when we took over a dead run's lock

    def acquire(self) -> TaskLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('started_at', '?')}"
            raise LockedError(
                f"{self.path}: another run of this task is in progress ({who}); wait for it to finish"
            ) from None
        previous = _read_holder(fd)
        if previous:
            self.stale_holder = previous  # a file with a free flock: its run died without cleaning up
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": datetime.now(UTC).isoformat()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # an empty file means a clean exit; non-empty + free flock means stale
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> dict:
    try:
        raw = os.pread(fd, 4096, 0)
        return json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        return {}

"""One process per database file: two supervisors on one file would run the same task twice."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import StoreLocked


class ProcessLock:
    """An exclusive advisory lock on `<db>.lock`, held for the life of the store. The kernel
    drops it when the process dies, so a crash never leaves a stale lock behind."""

    def __init__(self, db_path: Path) -> None:
        self.path = db_path.with_name(db_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreLocked(
                f"Database {self.path.with_suffix('')} is in use by another sidetask process "
                f"(pid {holder}, lock file {self.path}); two supervisors on one database "
                "would run the same task twice. Stop that process or use another --db."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

"""One process per database file: two supervisors on one file would run the same task twice.

The guard is an exclusive `flock` on the database file itself, on a descriptor of its own,
held for the life of the store. It holds however the file is reached — a symbolic link, a
hard link, a relative path from another directory all open the same inode, and flock locks
the inode — and there is no separate lock file that a temp cleaner could remove. The kernel
drops it when the process dies, so a crash never leaves a stale lock behind.

Why this does not disturb SQLite, which locks the same file with POSIX `fcntl` locks: on
Linux flock and fcntl locks are separate kinds and never conflict (a flock held by one
process does not stop another's SQLite, nor this process's). But POSIX locks belong to the
process and the inode, and closing *any* descriptor of the file drops all of them — so the
descriptor is closed only after the store's connections are closed, and a second store of
this process on a file it already holds is refused from a table kept here, without opening
the file (which, once closed, would drop the first store's SQLite locks). SQLite in WAL mode
needs a local file system anyway (the `-shm` file is shared memory); on NFS flock is emulated
with fcntl locks and this guard would not be sound.

A file that does not exist yet is created by `open(O_CREAT)`, which is atomic: two processes
creating it at once open the same new, empty file (SQLite takes an empty file for an empty
database), and only one of them gets the flock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import StoreLocked

#: the files this process holds, by (st_dev, st_ino)
_HELD: set[tuple[int, int]] = set()
#: descriptors never closed: closing one would drop this process's SQLite locks on the file
_KEPT: list[int] = []
#: how often to open again when the path is replaced by another file while the lock is taken
_ATTEMPTS = 5


def _key(stat: os.stat_result) -> tuple[int, int]:
    return stat.st_dev, stat.st_ino


def holder_pid(key: tuple[int, int]) -> int | None:
    """The process holding a flock on the file, from /proc/locks (Linux); None if unknown."""
    dev, ino = key
    wanted = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}"
    try:
        with open("/proc/locks") as locks:
            for line in locks:
                # "1: FLOCK  ADVISORY  WRITE 12644 fe:00:2146331 0 EOF"
                fields = line.split()
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
                    return int(fields[4]) or None  # 0: a process outside our pid namespace
    except (OSError, ValueError):
        pass
    return None


def _open(path: Path) -> int:
    """A descriptor of the database file, creating it when missing (O_CREAT is atomic: two
    processes creating it at once open the same file). A file this user may only read is
    opened for reading: flock needs no write access, and SQLite says what it cannot do."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except PermissionError:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


class ProcessLock:
    """An exclusive flock on the database file, held from `acquire` to `release`."""

    def __init__(self, db_path: Path) -> None:
        self.path = db_path
        self._fd: int | None = None
        self._key: tuple[int, int] | None = None

    def acquire(self) -> None:
        for _ in range(_ATTEMPTS):
            try:
                self._refuse_if_held(_key(os.stat(self.path)))
            except FileNotFoundError:
                pass  # created just below
            fd = _open(self.path)
            key = _key(os.fstat(fd))
            if key in _HELD:
                # Held by this process, though the stat above did not see it (another thread
                # created or linked it meanwhile): closing this descriptor would drop the
                # holder's SQLite locks, so it is kept open instead.
                _KEPT.append(fd)
                self._refuse_if_held(key)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                self._refuse(key, holder_pid(key))
            try:
                same = _key(os.stat(self.path)) == key
            except FileNotFoundError:
                same = False
            if same:
                self._fd, self._key = fd, key
                _HELD.add(key)
                return
            # The path was renamed or replaced between the open and the lock: the file
            # locked is not the one SQLite would open. Try again with what the path names now.
            os.close(fd)
        raise StoreLocked(
            f"Database {self.path} kept changing while it was being locked; try again"
        )

    def _refuse_if_held(self, key: tuple[int, int]) -> None:
        if key in _HELD:
            self._refuse(key, os.getpid())

    def _refuse(self, key: tuple[int, int], pid: int | None) -> None:
        holder = f"pid {pid}" if pid is not None else "pid unknown"
        raise StoreLocked(
            f"Database {self.path} is in use by another sidetask process ({holder}); two "
            "supervisors on one database would run the same task twice. Stop that process "
            "or use another --db."
        )

    def release(self) -> None:
        """Call only once the store's SQLite connections are closed (see the module's doc)."""
        if self._fd is not None and self._key is not None:
            _HELD.discard(self._key)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = self._key = None

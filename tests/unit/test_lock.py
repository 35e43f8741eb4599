"""The one-process guard (service/store/lock.py) beside SQLite's own locks, in this process:
a refused second store must leave the first store's SQLite locks in place (closing any
descriptor of the file would drop them all)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from service.errors import StoreLocked
from service.store.sqlite import SQLiteStore


def sqlite_locks(path: Path) -> list[str]:
    """The POSIX (fcntl) locks this process holds on the file, from /proc/locks."""
    stat = os.stat(path)
    inode = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    with open("/proc/locks") as locks:
        return sorted(
            " ".join(fields[1:3] + fields[3:4] + fields[6:])
            for fields in (line.split() for line in locks)
            if len(fields) >= 6
            and fields[1] == "POSIX"
            and fields[4] == str(os.getpid())
            and fields[5] == inode
        )


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="reads the kernel's lock table")
@pytest.mark.parametrize("how", ["same path", "symlink", "hard link"])
async def test_a_refused_second_store_leaves_sqlites_locks_alone(tmp_path: Path, how: str) -> None:
    db = tmp_path / "sidetask.db"
    first = SQLiteStore(db)
    await first.open()
    try:
        held = sqlite_locks(db)
        assert held, "a WAL connection holds a shared lock on the database file"
        other = db
        if how == "symlink":
            other = tmp_path / "link.db"
            other.symlink_to(db)
        elif how == "hard link":
            other = tmp_path / "hard.db"
            other.hardlink_to(db)
        with pytest.raises(
            StoreLocked, match=f"in use by another sidetask process \\(pid {os.getpid()}\\)"
        ):
            await SQLiteStore(other).open()
        assert sqlite_locks(db) == held
    finally:
        await first.close()
    # released with the store: another store takes the file, and SQLite opens it as usual
    again = SQLiteStore(db)
    await again.open()
    await again.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()

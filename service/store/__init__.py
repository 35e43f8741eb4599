"""Task state: the only package that knows SQL. `open_store` picks the backend for a setting."""

from __future__ import annotations

from .base import (
    Backend,
    Change,
    CommitListener,
    Decision,
    Lease,
    LeaseStore,
    ProcessGroup,
    Recovery,
    Store,
)
from .sqlite import SQLiteStore

__all__ = [
    "Backend",
    "Change",
    "CommitListener",
    "Decision",
    "Lease",
    "LeaseStore",
    "ProcessGroup",
    "Recovery",
    "SQLiteStore",
    "Store",
    "open_store",
]


def open_store(db: str) -> Backend:
    """The store for a `db` setting: a SQLite file path (PostgreSQL URLs come later)."""
    return SQLiteStore(db)

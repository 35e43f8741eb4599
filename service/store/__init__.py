"""Task state: the only package that knows SQL. `open_store` picks the backend for a setting."""

from __future__ import annotations

import re

from .base import (
    Backend,
    Change,
    CommitListener,
    Decision,
    Lease,
    LeaseStore,
    ProcessGroup,
    Recovery,
    ScheduleStore,
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
    "ScheduleStore",
    "Store",
    "describe_db",
    "migrate",
    "open_store",
]


def open_store(
    db: str, schema: str = "sidetask", replica_timeout: float = 30.0, max_waiting: int = 0
) -> Backend:
    """The store for a `db` setting: a PostgreSQL URL (tables in `schema`; a process
    silent for `replica_timeout` seconds is dead; `max_waiting` held across every process),
    else a SQLite file path. PostgreSQL's driver is imported only then: it is an extra."""
    if db.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(
            db, schema=schema, replica_timeout=replica_timeout, max_waiting=max_waiting
        )
    return SQLiteStore(db)


async def migrate(db: str, schema: str = "sidetask") -> int:
    """Brings the database of a `db` setting to this version's schema (a service also does
    at its start) and returns the version in force. PostgreSQL: under the schema's lock,
    while replicas run; SQLite: only while no service has the file open."""
    if db.startswith(("postgresql://", "postgres://")):
        from .postgres import migrate_url

        return await migrate_url(db, schema)
    from .schema import SCHEMA_VERSION

    store = SQLiteStore(db)
    await store.open()
    await store.close()
    return SCHEMA_VERSION


def describe_db(db: str) -> str:
    """A `db` setting for logs and messages: a URL without its password."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", db)

"""The cluster's locks, the submissions' (max_waiting) and the capped claims'
(type_concurrency), are taken first in a transaction, in one order, before any row. A
group-commit transaction holds whatever writes came together, in the order they came; one
that took a row and then the submissions' lock, while another held that lock and waited
for the row, deadlocked: a cancel sent to one replica for a task another runs, amid
submissions to both, met 25 in 30 seconds, and a capped claim and a submission in either
order 9 in 8 kills of `scripts/chaos --replicas 3` (each a stall of deadlock_timeout, a
second, then a batch redone)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from service import clock
from service.model import Status
from service.store import Change
from service.store import pg_queries as q
from service.store.postgres import PostgresStore
from tests.conftest import wait_for
from tests.store.conftest import new

TRY_CLAIM_LOCK = q.CLAIM_LOCK.replace("pg_advisory_xact_lock", "pg_try_advisory_xact_lock")
WAITING_FOR_A_LOCK = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"


@pytest.fixture
async def store(pg_dsn: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(pg_dsn, max_waiting=100)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def other(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """Another process's writer, in the middle of a transaction (submit() it)."""
    conn = await asyncpg.connect(pg_dsn, server_settings={"search_path": "sidetask"})
    await conn.execute("BEGIN")
    yield conn
    await conn.close()  # what it has not rolled back yet goes with it


async def submitted(conn: asyncpg.Connection) -> None:
    """The other transaction has submitted: it holds the submissions' lock."""
    await conn.execute(q.ADMIT_LOCK)


async def blocked(conn: asyncpg.Connection) -> None:
    """Until the store's transaction waits for a lock the other holds."""

    async def waiting() -> bool:
        return bool(await conn.fetchval(WAITING_FOR_A_LOCK))

    await wait_for(waiting, 10, "the store's transaction to wait for a lock")


async def test_a_change_and_a_submission_together_take_the_lock_before_the_row(
    store: PostgresStore, other: asyncpg.Connection
) -> None:
    task, _ = await store.insert(new())
    await submitted(other)
    # a cancel and a submission, queued together: one transaction of the store
    work = asyncio.gather(store.transition(Change(task.id, Status.CANCELLED)), store.insert(new()))
    await blocked(other)
    # it waits for the submissions' lock holding no row yet: the other transaction, which
    # writes this task next (its progress, its end), does not close a cycle
    locked = await other.fetch("SELECT id FROM tasks WHERE id = $1 FOR UPDATE NOWAIT", task.id)
    assert [row[0] for row in locked] == [task.id]
    await other.execute("ROLLBACK")
    cancelled, (_, created) = await asyncio.wait_for(work, 10)
    assert cancelled.status is Status.CANCELLED and created


async def test_a_capped_claim_and_a_submission_take_the_locks_in_one_order(
    store: PostgresStore, other: asyncpg.Connection
) -> None:
    await submitted(other)
    # a capped claim, then a submission, queued together: one transaction of the store
    work = asyncio.gather(
        store.claim(10, clock.now_ms(), {}, type_caps={"echo": 5}), store.insert(new())
    )
    await blocked(other)
    # it waits for the submissions' lock without the claims' one: the other transaction,
    # taking the claims' lock next, does not close a cycle
    assert await other.fetchval(TRY_CLAIM_LOCK) is True
    await other.execute("ROLLBACK")
    claimed, (task, created) = await asyncio.wait_for(work, 10)
    # a transaction's claims come after its other writes: it took the task submitted with it
    assert created and [t.id for t in claimed] == [task.id]


async def test_a_rate_limited_lease_and_a_submission_take_the_locks_in_one_order(
    store: PostgresStore, other: asyncpg.Connection
) -> None:
    await submitted(other)
    # a submission, then a worker's lease of a rate-limited type: one transaction
    now = clock.now_ms()
    work = asyncio.gather(
        store.insert(new()),
        store.lease("w1", ["echo"], now, "token", now + 60_000, type_rates={"echo": (5, 1000)}),
    )
    await blocked(other)
    # it waits for the submissions' lock without the claims' one, as a capped claim does
    assert await other.fetchval(TRY_CLAIM_LOCK) is True
    await other.execute("ROLLBACK")
    (task, created), (lease, _) = await asyncio.wait_for(work, 10)
    assert created and lease is not None and lease.task.id == task.id


async def test_a_rate_limited_lease_waits_for_the_claims_lock(
    store: PostgresStore, other: asyncpg.Connection
) -> None:
    """Another process counting its claims of the type holds the lock: the lease waits for
    it, and counts after it (one count for both)."""
    task, _ = await store.insert(new())
    assert await other.fetchval(TRY_CLAIM_LOCK) is True
    now = clock.now_ms()
    work = asyncio.ensure_future(
        store.lease("w1", ["echo"], now, "token", now + 60_000, type_rates={"echo": (5, 1000)})
    )
    await blocked(other)
    assert not work.done()
    await other.execute("ROLLBACK")
    lease, _ = await asyncio.wait_for(work, 10)
    assert lease is not None and lease.task.id == task.id

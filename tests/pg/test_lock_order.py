"""The cluster's two locks, the submissions' (max_waiting) and the capped claims'
(type_concurrency), are taken in one order by every transaction: the submissions' first.
A transaction of the group commit may hold a claim and a submission in either order; with
each process taking the two as its writes came, two processes deadlocked
(`scripts/chaos --replicas 3` with a type_concurrency met 9 deadlocks in 8 kills, each a
stall of deadlock_timeout, a second, then a batch redone)."""

from __future__ import annotations

import asyncio

import asyncpg

from service import clock
from service.store import pg_queries as q
from service.store.postgres import PostgresStore
from tests.conftest import wait_for
from tests.store.conftest import new

TRY_CLAIM_LOCK = q.CLAIM_LOCK.replace("pg_advisory_xact_lock", "pg_try_advisory_xact_lock")
WAITING_FOR_A_LOCK = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"


async def test_a_capped_claim_waits_for_the_submissions_lock_before_it_takes_its_own(
    pg_dsn: str,
) -> None:
    store = PostgresStore(pg_dsn, max_waiting=100)
    await store.open()
    other = await asyncpg.connect(pg_dsn, server_settings={"search_path": "sidetask"})
    try:
        async with other.transaction():
            # another process's transaction has submitted: it holds the submissions' lock
            await other.execute(q.ADMIT_LOCK)
            # a capped claim and a submission, queued together: one transaction of the store
            work = asyncio.gather(
                store.claim(10, clock.now_ms(), {}, type_caps={"echo": 5}),
                store.insert(new()),
            )

            async def blocked() -> bool:
                return bool(await other.fetchval(WAITING_FOR_A_LOCK))

            await wait_for(blocked, 10, "the store's transaction to wait for a lock")
            # it waits for the submissions' lock without the claims' one: the other
            # transaction, taking the claims' lock next, would not close a cycle
            assert await other.fetchval(TRY_CLAIM_LOCK) is True
        claimed, (_, created) = await asyncio.wait_for(work, 10)
        assert claimed == [] and created
    finally:
        await other.close()
        await store.close()

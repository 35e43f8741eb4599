"""A claim makes the delayed tasks whose time has come due (run_after_ms to 0) without
waiting for a row another transaction holds. Every replica's claims do it, in group-commit
transactions whose other writes take rows and the admission lock in their own order, and a
wait there closed deadlocks between replicas (`scripts/chaos --replicas 3` met them: each
a stall of deadlock_timeout, a second, then a batch redone). A row passed over is made due
by a later claim, once it is free."""

from __future__ import annotations

import asyncio

import asyncpg

from service import clock
from service.store.postgres import PostgresStore
from tests.store.conftest import new


async def test_a_claim_passes_over_a_due_row_another_transaction_holds_and_takes_it_later(
    pg_dsn: str,
) -> None:
    store = PostgresStore(pg_dsn)
    await store.open()
    other = await asyncpg.connect(pg_dsn, server_settings={"search_path": "sidetask"})
    try:
        held, _ = await store.insert(new(delay_ms=1_000))
        free, _ = await store.insert(new(delay_ms=1_000))
        later = clock.now_ms() + 2_000
        async with other.transaction():
            # another writer's transaction has the row (a change to it, or its own release)
            await other.execute("SELECT id FROM tasks WHERE id = $1 FOR UPDATE", held.id)
            claimed = await asyncio.wait_for(store.claim(10, later, {}), 10)
            assert [task.id for task in claimed] == [free.id]
        claimed = await asyncio.wait_for(store.claim(10, later, {}), 10)
        assert [task.id for task in claimed] == [held.id]
    finally:
        await other.close()
        await store.close()

"""Limits that hold across every process sharing one PostgreSQL database: a type's
concurrency cap (claimers at once never hold more of the type than the cap, though each
has room of its own for more), and max_waiting (submissions to several processes at once
never leave more tasks waiting than the limit)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from service import clock
from service.errors import TooManyRequests, Unprocessable
from service.model import Status
from service.store import Change
from service.store.postgres import PostgresStore
from tests.store.conftest import new
from tests.sup_util import rows

PROCESSES = 3


@pytest.fixture
async def cluster(pg_dsn: str) -> AsyncIterator[list[PostgresStore]]:
    stores = [PostgresStore(pg_dsn, max_waiting=10) for _ in range(PROCESSES)]
    for store in stores:
        await store.open()
    yield stores
    for store in stores:
        await store.close()


async def start(store: PostgresStore, task_id: int) -> None:
    """What the supervisor does with a task its process claimed (SPEC 3): handed on,
    confirmed, started; each step applies only while that process holds it."""
    for target in (Status.SCHEDULED, Status.QUEUED, Status.RUNNING):
        await store.transition(Change(task_id, target, fenced=True))


def in_hand(db: str) -> int:
    ((count,),) = rows(
        db,
        "SELECT count(*) FROM tasks WHERE type = 'gremlin'"
        " AND status IN ('scheduling', 'scheduled', 'queued', 'running', 'cancelling')",
    )
    return int(count)


async def test_a_type_cap_holds_across_processes_claiming_at_once(
    cluster: list[PostgresStore], pg_dsn: str
) -> None:
    for store in cluster[:2]:  # max_waiting is 10: two processes submit five each
        for _ in range(5):
            await store.insert(new(type="gremlin"))
    held_by: dict[int, PostgresStore] = {}
    most = 0
    for _ in range(10):  # rounds: every process claims at once, then one task ends
        # each process has room for 5 of its own; the cluster's cap is 2
        claims = await asyncio.gather(
            *(
                store.claim(5, clock.now_ms(), {"gremlin": 5}, type_caps={"gremlin": 2})
                for store in cluster
            )
        )
        assert sum(map(len, claims)) <= 2
        most = max(most, in_hand(pg_dsn))
        for store, claimed in zip(cluster, claims, strict=True):
            held_by.update((task.id, store) for task in claimed)
        # the oldest task in hand runs and ends, by the process that claimed it
        oldest = min(held_by)
        holder = held_by.pop(oldest)
        await start(holder, oldest)
        await holder.transition(Change(oldest, Status.SUCCESS, fenced=True))
    assert most == 2  # reached, never passed (each round measured after every claim)
    assert rows(pg_dsn, "SELECT status, count(*) FROM tasks GROUP BY status") == [("success", 10)]


async def test_max_waiting_holds_across_processes_submitting_at_once(
    cluster: list[PostgresStore], pg_dsn: str
) -> None:
    async def submit(store: PostgresStore) -> bool:
        try:
            await store.insert(new())
        except TooManyRequests as exc:
            assert "the limit is 10 (max_waiting)" in exc.message
            return False
        return True

    accepted = await asyncio.gather(*(submit(cluster[n % PROCESSES]) for n in range(30)))
    assert sum(accepted) == 10
    assert rows(pg_dsn, "SELECT count(*) FROM tasks") == [(10,)]
    # one starts: room for one more
    (claimed,) = await cluster[0].claim(1, clock.now_ms(), {})
    await start(cluster[0], claimed.id)
    assert await submit(cluster[2]) is True
    assert await submit(cluster[1]) is False


async def test_an_idempotency_key_holds_across_processes_submitting_at_once(
    cluster: list[PostgresStore], pg_dsn: str
) -> None:
    answers = await asyncio.gather(
        *(store.insert(new(idempotency_key="order-9", input='{"n": 9}')) for store in cluster)
    )
    assert sorted(created for _, created in answers) == [False, False, True]
    assert len({task.id for task, _ in answers}) == 1
    with pytest.raises(Unprocessable, match="was used with a different request"):
        await cluster[1].insert(new(idempotency_key="order-9", input='{"n": 10}'))
    assert rows(pg_dsn, "SELECT count(*) FROM tasks") == [(1,)]

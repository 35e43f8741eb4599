"""A writer transaction's status changes and its claim go in one statement on PostgreSQL
(pg_queries.change_statuses): a task the statement changes is passed over by its claim (a
row changed twice in one statement keeps one of the two changes, unpredictably), and the
attempts the changes start and end are written with them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from service import clock
from service.model import AttemptEnd, AttemptOutcome, Status
from service.store import Change
from service.store.postgres import PostgresStore
from tests.store.conftest import new
from tests.sup_util import trail


@pytest.fixture
async def store(pg_dsn: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(pg_dsn)
    await store.open()
    yield store
    await store.close()


async def test_a_claim_passes_over_a_task_its_transaction_changes(
    store: PostgresStore, pg_dsn: str
) -> None:
    first, _ = await store.insert(new())
    second, _ = await store.insert(new())
    # queued together: one transaction, the claim in the cancel's statement
    cancelled, claimed = await asyncio.wait_for(
        asyncio.gather(
            store.transition(Change(first.id, Status.CANCELLED)),
            store.claim(10, clock.now_ms(), {}),
        ),
        10,
    )
    assert cancelled.status is Status.CANCELLED
    assert [(t.id, t.status) for t in claimed] == [(second.id, Status.SCHEDULING)]
    assert (await store.get(None, first.id)).status is Status.CANCELLED  # type: ignore[union-attr]
    assert trail(pg_dsn, first.id) == ["new", "cancelled"]
    assert trail(pg_dsn, second.id) == ["new", "scheduling"]


async def test_starts_ends_and_a_claim_in_one_transaction_write_each_attempt(
    store: PostgresStore,
) -> None:
    tasks = [(await store.insert(new()))[0] for _ in range(4)]
    ids = [t.id for t in await store.claim(2, clock.now_ms(), {})]
    for target in (Status.SCHEDULED, Status.QUEUED):
        await store.transition_many([Change(i, target, fenced=True) for i in ids])
    started = [Change(i, Status.RUNNING, fenced=True, starts_attempt=True) for i in ids]
    await store.transition_many(started)
    # one transaction: the first run ends, the second fails, and the rest are claimed
    done = AttemptEnd(AttemptOutcome.SUCCESS)
    failed = AttemptEnd(AttemptOutcome.FAILED, "ValueError", "bad", "Traceback …")
    ended, broke, claimed = await asyncio.wait_for(
        asyncio.gather(
            store.transition(
                Change(ids[0], Status.SUCCESS, {"result": "1"}, fenced=True, ends_attempt=done)
            ),
            store.transition(
                Change(ids[1], Status.FAILED, {"result": "no"}, fenced=True, ends_attempt=failed)
            ),
            store.claim(10, clock.now_ms(), {}),
        ),
        10,
    )
    assert (ended.status, ended.result, broke.status) == (Status.SUCCESS, "1", Status.FAILED)
    assert sorted(t.id for t in claimed) == [t.id for t in tasks[2:]]
    (first,) = await store.attempts(ids[0])
    (second,) = await store.attempts(ids[1])
    assert (first.number, first.outcome, first.end_ms is not None) == (
        1,
        AttemptOutcome.SUCCESS,
        True,
    )
    assert (second.outcome, second.error_type, second.error_message) == (
        AttemptOutcome.FAILED,
        "ValueError",
        "bad",
    )
    assert [await store.attempts(t.id) for t in claimed] == [[], []]

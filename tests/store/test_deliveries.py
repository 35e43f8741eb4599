"""The store contract, webhooks' outbox: a status change a hook or a task's callback
matches writes its deliveries in its own transaction (none when it is refused); a claim
takes each due delivery once, under a lease that, run out, lets another claim take it; an
answer is recorded only under the claim it was made under; deliveries go with their task.
Two PostgreSQL stores claiming at once never take the same delivery."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from service import clock
from service.errors import TransitionRefused
from service.model import (
    CALLBACK_HOOK,
    DeliveryAnswer,
    DeliveryState,
    HookRule,
    Outbox,
    Status,
)
from service.store import Backend, Change
from service.store.postgres import PostgresStore
from tests.store.conftest import Raw, new

ANY_END = frozenset({Status.SUCCESS, Status.FAILED, Status.CANCELLED})
OUTBOX = Outbox(
    rules=(
        HookRule("ops", "https://ops.example.org/h", frozenset({Status.CANCELLED})),
        HookRule("echoes", "https://e.example.org/h", ANY_END, frozenset({"echo"})),
        HookRule("sleeps", "https://s.example.org/h", ANY_END, frozenset({"sleep"})),
    ),
    callback_statuses=frozenset({Status.CANCELLED}),
)


def answer(code: int | None = 200, error: str | None = None) -> DeliveryAnswer:
    return DeliveryAnswer(clock.now_ms(), code, error, 3)


async def test_a_matching_change_writes_its_deliveries_with_it(store: Backend) -> None:
    store.set_outbox(OUTBOX)
    called, _ = await store.insert(new(callback="https://me.example.org/cb"))
    plain, _ = await store.insert(new())
    for task in (called, plain):
        cancelled = await store.transition(Change(task.id, Status.CANCELLED))
        assert cancelled.status is Status.CANCELLED
    found = await store.deliveries(called.id)
    assert sorted((d.hook, d.url, d.status) for d in found) == [
        (CALLBACK_HOOK, "https://me.example.org/cb", "cancelled"),
        ("echoes", "https://e.example.org/h", "cancelled"),
        ("ops", "https://ops.example.org/h", "cancelled"),
    ]
    assert all(d.state is DeliveryState.PENDING and d.attempts == 0 for d in found)
    assert len({d.uid for d in found}) == 3
    # a task without a callback gets the hooks only; the sleep hook matches no echo
    assert sorted(d.hook for d in await store.deliveries(plain.id)) == ["echoes", "ops"]
    # the body is the task as GET shows it after the change
    (due, *_) = await store.claim_deliveries(10, 60_000)
    task = await store.get(None, due.task_id)
    assert task is not None
    assert orjson.loads(due.body) == task.to_api()


async def test_a_refused_change_writes_no_delivery(store: Backend) -> None:
    store.set_outbox(OUTBOX)
    task, _ = await store.insert(new())
    await store.transition(Change(task.id, Status.CANCELLED))
    with pytest.raises(TransitionRefused):
        await store.transition(Change(task.id, Status.CANCELLED))
    assert len(await store.deliveries(task.id)) == 2  # of the first cancel only
    # and without an outbox, nothing is written at all
    store.set_outbox(None)
    other, _ = await store.insert(new())
    await store.transition(Change(other.id, Status.CANCELLED))
    assert await store.deliveries(other.id) == []


async def test_a_claim_takes_each_due_delivery_once_under_its_lease(store: Backend) -> None:
    store.set_outbox(Outbox(callback_statuses=frozenset({Status.CANCELLED})))
    assert await store.next_delivery_ms() is None
    ids = []
    for n in range(3):
        task, _ = await store.insert(new(callback=f"https://me.example.org/{n}"))
        await store.transition(Change(task.id, Status.CANCELLED))
        ids.append(task.id)
    assert (await store.next_delivery_ms() or 0) <= clock.now_ms()
    first = await store.claim_deliveries(2, 60_000)
    second = await store.claim_deliveries(2, 60_000)
    assert len(first) == 2 and len(second) == 1
    assert sorted(d.task_id for d in first + second) == ids
    assert await store.claim_deliveries(2, 60_000) == []  # all claimed
    # answered under its claim: recorded; pending again at a later time, then delivered
    due = first[0]
    later = clock.now_ms() + 60_000
    assert await store.record_delivery(due, answer(500), DeliveryState.PENDING, later)
    (shown,) = await store.deliveries(due.task_id)
    assert (shown.state, shown.attempts, shown.next_ms) == (DeliveryState.PENDING, 1, later)
    assert [a.code for a in shown.answers] == [500]
    # the claim was given back with the answer: the same claim records nothing more
    assert not await store.record_delivery(due, answer(), DeliveryState.DELIVERED, None)


async def test_a_claim_that_ran_out_is_taken_over_and_the_old_one_records_nothing(
    store: Backend,
) -> None:
    store.set_outbox(Outbox(callback_statuses=frozenset({Status.CANCELLED})))
    task, _ = await store.insert(new(callback="https://me.example.org/cb"))
    await store.transition(Change(task.id, Status.CANCELLED))
    (lost,) = await store.claim_deliveries(5, 0)  # a lease that ends as it starts
    (taken,) = await store.claim_deliveries(5, 60_000)
    assert (taken.id, taken.uid) == (lost.id, lost.uid)  # the same delivery, the same id
    assert not await store.record_delivery(lost, answer(), DeliveryState.DELIVERED, None)
    assert await store.record_delivery(taken, answer(), DeliveryState.DELIVERED, None)
    (shown,) = await store.deliveries(task.id)
    assert (shown.state, shown.attempts, shown.next_ms) == (DeliveryState.DELIVERED, 1, None)
    assert shown.to_api()["next_try"] is None
    assert await store.next_delivery_ms() is None


async def test_deliveries_go_with_their_task(store: Backend) -> None:
    store.set_outbox(Outbox(callback_statuses=frozenset({Status.CANCELLED})))
    task, _ = await store.insert(new(callback="https://me.example.org/cb"))
    await store.transition(Change(task.id, Status.CANCELLED))
    (due,) = await store.claim_deliveries(1, 60_000)
    await store.record_delivery(due, answer(410), DeliveryState.FAILED, None)
    await store.delete(task.graph, task.id, None)
    assert await store.deliveries(task.id) == []
    assert await store.claim_deliveries(5, 60_000) == []
    assert await store.deliveries(0) == []


async def test_a_reopened_store_still_has_its_pending_deliveries(raw: Raw) -> None:
    """Written with the change, they survive a restart (a SIGKILL's is in
    tests/web/test_webhooks_processes.py)."""
    raw.store.set_outbox(Outbox(callback_statuses=frozenset({Status.CANCELLED})))
    task, _ = await raw.store.insert(new(callback="https://me.example.org/cb"))
    await raw.store.transition(Change(task.id, Status.CANCELLED))
    store = await raw.reopen()
    (due,) = await store.claim_deliveries(5, 60_000)
    assert due.task_id == task.id


async def test_two_postgresql_replicas_claiming_at_once_take_each_delivery_once(
    pg_dsn: str, tmp_path: Path
) -> None:
    one = PostgresStore(pg_dsn)
    two = PostgresStore(pg_dsn)
    await one.open()
    await two.open()
    try:
        one.set_outbox(Outbox(callback_statuses=frozenset({Status.CANCELLED})))
        for n in range(60):
            task, _ = await one.insert(new(callback=f"https://me.example.org/{n}"))
            await one.transition(Change(task.id, Status.CANCELLED))
        taken: list[int] = []
        while True:
            got = await asyncio.wait_for(
                asyncio.gather(one.claim_deliveries(7, 60_000), two.claim_deliveries(7, 60_000)),
                30,
            )
            batch = [d.id for found in got for d in found]
            if not batch:
                break
            taken.extend(batch)
        assert len(taken) == len(set(taken)) == 60
    finally:
        await one.close()
        await two.close()

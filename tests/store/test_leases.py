"""The store contract, external workers' leases (LeaseStore): a claim under a lease, the
reports that start the task and extend the lease, the last report, expiry and renewal."""

from __future__ import annotations

import pytest

from service import clock
from service.errors import Conflict, NotFound, TransitionRefused
from service.model import Status, Task
from service.store import Backend, Change, Lease
from tests.store.conftest import GRAPH, OTHER, Raw, new

MINUTE = 60_000


def succeed(task: Task) -> Change:
    return Change(task.id, Status.SUCCESS, {"result": '"done"'})


def give_back(task: Task) -> Change:
    return Change(task.id, Status.RESTORING, {"retries": task.retries + 1})


async def leased(store: Backend, task_type: str = "render", token: str = "tok") -> Lease:
    """A new task of `task_type`, claimed by worker w1 under `token` for a minute."""
    await store.insert(new(type=task_type))
    now = clock.now_ms()
    lease, next_due = await store.lease("w1", [task_type], now, token, now + MINUTE)
    assert lease is not None and next_due is None
    return lease


async def test_a_lease_claims_the_first_due_task_of_the_types_for_the_worker(
    store: Backend,
) -> None:
    await store.insert(new(type="echo", priority=99))  # not a type asked for
    low, _ = await store.insert(new(type="render"))
    high, _ = await store.insert(new(type="render", priority=5))
    now = clock.now_ms()
    lease, _ = await store.lease("w1", ["render", "other"], now, "tok", now + MINUTE)
    assert lease is not None
    assert (lease.task.id, lease.task.status, lease.task.server) == (
        high.id,
        Status.SCHEDULED,
        "w1",
    )
    assert (lease.token, lease.expires_ms) == ("tok", now + MINUTE)
    statuses = [e.status for e in await store.events_after(0, None, high.id, 10)]
    assert statuses == [Status.NEW, Status.SCHEDULED]
    second, _ = await store.lease("w2", ["render"], now, "tok2", now + MINUTE)
    assert second is not None and second.task.id == low.id


async def test_with_nothing_due_a_lease_says_when_the_next_task_comes_due(
    store: Backend, raw: Raw
) -> None:
    now = clock.now_ms()
    assert await store.lease("w1", ["render"], now, "tok", now + MINUTE) == (None, None)
    later, _ = await store.insert(new(type="render", delay_ms=50_000))
    damaged, _ = await store.insert(new(type="render"))
    await raw.damage(damaged.id)  # due, but never handed out, and not waited for
    now = clock.now_ms()
    lease, next_due = await store.lease("w1", ["render"], now, "tok", now + MINUTE)
    assert lease is None and next_due == later.run_after_ms
    assert await raw.status(damaged.id) == "new"


async def test_the_first_report_starts_the_task_and_each_report_extends_the_lease(
    store: Backend,
) -> None:
    lease = await leased(store)
    now = clock.now_ms()
    first = await store.report(GRAPH, lease.task.id, "tok", None, now + 2 * MINUTE)
    assert (first.task.status, first.expires_ms) == (Status.RUNNING, now + 2 * MINUTE)
    statuses = [e.status for e in await store.events_after(0, None, lease.task.id, 10)]
    assert statuses[-2:] == [Status.SCHEDULED, Status.RUNNING]
    second = await store.report(GRAPH, lease.task.id, "tok", 40, now + 3 * MINUTE)
    assert (second.task.status, second.task.progress, second.expires_ms) == (
        Status.RUNNING,
        40,
        now + 3 * MINUTE,
    )
    kinds = [e.kind.value for e in await store.events_after(0, None, lease.task.id, 10)]
    assert kinds[-1] == "task.progress"


async def test_a_report_with_another_token_or_on_another_graph_is_refused(
    store: Backend,
) -> None:
    lease = await leased(store)
    later = clock.now_ms() + MINUTE
    with pytest.raises(Conflict, match="not held by this lease"):
        await store.report(GRAPH, lease.task.id, "other", None, later)
    with pytest.raises(NotFound):
        await store.report(OTHER, lease.task.id, "tok", None, later)
    with pytest.raises(NotFound):
        await store.report(GRAPH, 999, "tok", None, later)
    with pytest.raises(Conflict):
        await store.settle_lease(GRAPH, lease.task.id, "other", None, succeed)
    assert (await store.get(GRAPH, lease.task.id)).status is Status.SCHEDULED  # type: ignore[union-attr]


async def test_a_report_on_an_expired_lease_is_refused(store: Backend) -> None:
    await store.insert(new(type="render"))
    now = clock.now_ms()
    lease, _ = await store.lease("w1", ["render"], now, "tok", now - 1)
    assert lease is not None
    with pytest.raises(Conflict, match="has expired"):
        await store.report(GRAPH, lease.task.id, "tok", None, now + MINUTE)
    with pytest.raises(Conflict, match="has expired"):
        await store.settle_lease(GRAPH, lease.task.id, "tok", None, succeed)


async def test_a_task_cancelled_meanwhile_is_reported_back_unchanged(store: Backend) -> None:
    lease = await leased(store)
    cancelled = await store.transition(Change(lease.task.id, Status.CANCELLED))
    answer = await store.report(GRAPH, lease.task.id, "tok", 50, clock.now_ms() + MINUTE)
    assert answer.task == cancelled
    with pytest.raises(Conflict, match="no longer held by a worker"):
        await store.settle_lease(GRAPH, lease.task.id, "tok", None, succeed)


async def test_the_last_report_ends_the_task_as_decided_and_ends_the_lease(
    store: Backend,
) -> None:
    lease = await leased(store)
    # settled without a report first: it starts, then ends
    done = await store.settle_lease(GRAPH, lease.task.id, "tok", 100, succeed)
    assert (done.status, done.progress, done.result) == (Status.SUCCESS, 100, '"done"')
    statuses = [e.status for e in await store.events_after(0, None, lease.task.id, 10)]
    assert statuses[-3:] == [Status.SCHEDULED, Status.RUNNING, Status.SUCCESS]
    with pytest.raises(Conflict):
        await store.report(GRAPH, lease.task.id, "tok", None, clock.now_ms() + MINUTE)


async def test_a_cancel_requested_meanwhile_wins_over_the_decision(store: Backend) -> None:
    lease = await leased(store)
    await store.report(GRAPH, lease.task.id, "tok", None, clock.now_ms() + MINUTE)
    await store.transition(Change(lease.task.id, Status.CANCELLING))
    asked: list[Task] = []

    def decide(task: Task) -> Change:
        asked.append(task)
        return succeed(task)

    ended = await store.settle_lease(GRAPH, lease.task.id, "tok", 7, decide)
    assert (ended.status, ended.progress, asked) == (Status.CANCELLED, 7, [])


async def test_the_decision_of_a_settle_may_be_refused(store: Backend) -> None:
    lease = await leased(store)
    await store.report(GRAPH, lease.task.id, "tok", None, clock.now_ms() + MINUTE)
    with pytest.raises(TransitionRefused, match="can't become NEW"):
        await store.settle_lease(
            GRAPH, lease.task.id, "tok", None, lambda t: Change(t.id, Status.NEW)
        )
    assert (await store.get(GRAPH, lease.task.id)).status is Status.RUNNING  # type: ignore[union-attr]


async def test_expired_leases_are_given_back_as_decided_and_refuse_late_reports(
    store: Backend,
) -> None:
    await store.insert(new(type="render"))
    await store.insert(new(type="render"))
    now = clock.now_ms()
    short, _ = await store.lease("w1", ["render"], now, "short", now + 1_000)
    long, _ = await store.lease("w2", ["render"], now, "long", now + MINUTE)
    assert short is not None and long is not None
    given = await store.expire_leases(now + 2_000, ["render"], give_back)
    assert [(t.id, t.status, t.retries) for t in given] == [(short.task.id, Status.RESTORING, 1)]
    with pytest.raises(Conflict, match="not held by this lease"):
        await store.report(GRAPH, short.task.id, "short", None, now + MINUTE)
    # the other lease is live still; the given-back task may be leased again
    assert (await store.report(GRAPH, long.task.id, "long", None, now + MINUTE)).task.status is (
        Status.RUNNING
    )
    again, _ = await store.lease("w3", ["render"], now + 2_000, "again", now + MINUTE)
    assert again is not None and again.task.id == short.task.id
    assert await store.expire_leases(now + 2_000, ["other"], give_back) == []


async def test_a_worker_status_with_no_lease_is_expired_by_the_unleased_decision(
    store: Backend, raw: Raw
) -> None:
    """A task run in-process before its type became external: no worker will report on it."""
    orphan, _ = await store.insert(new(type="render"))
    await raw.set(orphan.id, status="running")
    damaged, _ = await store.insert(new(type="render"))
    await raw.set(damaged.id, status="running")
    await raw.damage(damaged.id)
    unleased_asked: list[int] = []

    def unleased(task: Task) -> Change:
        unleased_asked.append(task.id)
        return Change(task.id, Status.FAILED, {"result": "orphan"})

    now = clock.now_ms()
    (failed,) = await store.expire_leases(now, ["render"], give_back, unleased)
    assert (failed.id, failed.status, unleased_asked) == (orphan.id, Status.FAILED, [orphan.id])
    assert await raw.status(damaged.id) == "running"  # damaged: left as it is
    # without an `unleased` decision, `decide` is asked
    other, _ = await store.insert(new(type="render"))
    await raw.set(other.id, status="scheduled")
    (back,) = await store.expire_leases(now, ["render"], give_back)
    assert (back.id, back.status) == (other.id, Status.RESTORING)


async def test_renewal_extends_every_live_lease_of_the_types(store: Backend) -> None:
    for _ in range(2):
        await store.insert(new(type="render"))
    await store.insert(new(type="print"))
    now = clock.now_ms()
    a, _ = await store.lease("w1", ["render"], now, "a", now + 1_000)
    b, _ = await store.lease("w1", ["render"], now, "b", now + 10 * MINUTE)
    c, _ = await store.lease("w1", ["print"], now, "c", now + 1_000)
    assert a is not None and b is not None and c is not None
    assert await store.renew_leases(["render"], now + MINUTE) == 2
    # a renewal never shortens a lease; another type's is left alone
    assert await store.expire_leases(now + 2_000, ["render"], give_back) == []
    (expired,) = await store.expire_leases(now + 2_000, ["render", "print"], give_back)
    assert expired.id == c.task.id
    (late,) = await store.expire_leases(now + MINUTE + 1, ["render"], give_back)
    assert late.id == a.task.id

"""The store contract, job types as a whole, on every backend: a paused type's tasks are
not claimed (nor leased) until it is resumed, and a type's rate limit (type_rate_limits)
bounds how many of it are claimed in each fixed window, counted in the store for every
process that shares it."""

from __future__ import annotations

from typing import Any

from service import clock
from service.store import Backend
from tests.conftest import wait_for
from tests.store.conftest import new

HOUR_MS = 3_600_000


async def test_a_paused_type_is_not_claimed_until_resumed(store: Backend) -> None:
    paused = [(await store.insert(new(type="sleep")))[0].id for _ in range(2)]
    other = (await store.insert(new(type="echo")))[0].id
    since = await store.pause_type("sleep")
    assert await store.pause_type("sleep") == since  # again: its first time kept
    assert await store.paused_types() == {"sleep": since}
    claimed = await store.claim(10, clock.now_ms(), {})
    assert [t.id for t in claimed] == [other]
    assert await store.claim(10, clock.now_ms(), {}) == []
    assert await store.resume_type("sleep") is True
    assert await store.resume_type("sleep") is False
    assert await store.paused_types() == {}
    assert sorted(t.id for t in await store.claim(10, clock.now_ms(), {})) == paused


async def test_a_paused_type_is_not_leased_to_a_worker(store: Backend) -> None:
    task, _ = await store.insert(new(type="resize"))
    await store.pause_type("resize")
    now = clock.now_ms()
    lease, _ = await store.lease("w1", ["resize"], now, "token-1", now + 10_000)
    assert lease is None
    await store.resume_type("resize")
    lease, _ = await store.lease("w1", ["resize"], now, "token-2", now + 10_000)
    assert lease is not None and lease.task.id == task.id


async def test_a_rate_limit_bounds_the_claims_of_its_type_in_each_window(store: Backend) -> None:
    for _ in range(8):
        await store.insert(new(type="limited"))
    free = [(await store.insert(new(type="echo")))[0].id for _ in range(3)]
    rates = {"limited": (3, HOUR_MS)}
    first = await store.claim(20, clock.now_ms(), {}, type_rates=rates)
    assert sum(t.type == "limited" for t in first) == 3  # its window's three
    assert sorted(t.id for t in first if t.type == "echo") == free  # other types unbounded
    # within the same hour's window: no more of it, however many claims ask
    for _ in range(3):
        assert await store.claim(20, clock.now_ms(), {}, type_rates=rates) == []
    # a higher limit in the same window: only what it adds
    more = await store.claim(20, clock.now_ms(), {}, type_rates={"limited": (5, HOUR_MS)})
    assert len(more) == 2


async def test_the_next_window_claims_again(store: Backend) -> None:
    """A window of one second (the store's clock on SQLite, the database's on PostgreSQL):
    two in each window, and the rest as the next windows come."""
    for _ in range(5):
        await store.insert(new(type="limited"))
    rates = {"limited": (2, 1000)}
    taken: list[int] = []

    async def all_claimed() -> bool:
        claimed = await store.claim(10, clock.now_ms(), {}, type_rates=rates)
        assert len(claimed) <= 2
        taken.extend(t.id for t in claimed)
        return len(taken) == 5

    await wait_for(all_claimed, 10, "the five tasks to be claimed two a second")


async def lease(store: Backend, types: list[str], rates: dict[str, tuple[int, int]]) -> Any:
    now = clock.now_ms()
    return await store.lease("w1", types, now, f"token-{now}", now + 60_000, type_rates=rates)


async def test_a_rate_limit_bounds_the_leases_of_its_type_in_each_window(store: Backend) -> None:
    """A worker's lease is a start: at most N of a limited type in the window, the other
    types handed out past it, and when only the held type waits, the answer is when its
    window opens (the start of the next hour here)."""
    limited = [(await store.insert(new(type="limited")))[0].id for _ in range(5)]
    free = [(await store.insert(new(type="resize")))[0].id for _ in range(2)]
    rates = {"limited": (3, HOUR_MS)}
    leased: list[int] = []
    before = clock.now_ms()
    while True:
        found, next_ms = await lease(store, ["limited", "resize"], rates)
        if found is None:
            break
        assert next_ms is None
        leased.append(found.task.id)
    assert sorted(leased) == sorted(limited[:3] + free)
    # two of the type wait, held: look again when the next hour's window opens
    assert next_ms is not None and next_ms % HOUR_MS == 0
    assert before < next_ms <= clock.now_ms() + HOUR_MS
    # a worker of the other type only: nothing waits for it
    assert await lease(store, ["resize"], rates) == (None, None)
    # without a limit, the two are handed out
    rest = [(await lease(store, ["limited"], {}))[0] for _ in range(2)]
    assert sorted(t.task.id for t in rest) == limited[3:]


async def test_the_scheduler_and_workers_share_one_limit(store: Backend) -> None:
    limited = [(await store.insert(new(type="limited")))[0].id for _ in range(6)]
    rates = {"limited": (4, HOUR_MS)}
    claimed = await store.claim(3, clock.now_ms(), {}, type_rates=rates)
    assert [t.id for t in claimed] == limited[:3]
    found, _ = await lease(store, ["limited"], rates)
    assert found is not None and found.task.id == limited[3]
    # the four of the window taken, by either: neither takes more
    found, next_ms = await lease(store, ["limited"], rates)
    assert found is None and next_ms is not None and next_ms % HOUR_MS == 0
    assert await store.claim(10, clock.now_ms(), {}, type_rates=rates) == []


async def test_a_held_lease_is_answered_with_its_window_and_leased_in_it(store: Backend) -> None:
    """A window of one second: the time a held lease is given is the next window's start,
    and a lease from then on gets the task."""
    for _ in range(4):
        await store.insert(new(type="limited"))
    rates = {"limited": (1, 1000)}
    before = clock.now_ms()
    held: list[int] = []

    async def one_held() -> bool:
        found, next_ms = await lease(store, ["limited"], rates)
        if found is None:
            assert next_ms is not None
            held.append(next_ms)
        return found is None

    await wait_for(one_held, 10, "a lease to be held by the limit")
    opens = held[0]
    assert opens % 1000 == 0 and before < opens <= clock.now_ms() + 1000

    async def leased_again() -> bool:
        found, _ = await lease(store, ["limited"], rates)
        return found is not None

    await wait_for(leased_again, 10, "a lease in the next window")
    assert clock.now_ms() >= opens - 50  # not before the window (50 ms: the two clocks)

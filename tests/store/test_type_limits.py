"""The store contract, job types as a whole, on every backend: a paused type's tasks are
not claimed (nor leased) until it is resumed, and a type's rate limit (type_rate_limits)
bounds how many of it are claimed in each fixed window, counted in the store for every
process that shares it."""

from __future__ import annotations

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

"""Event ids across processes sharing one PostgreSQL database: a reader that follows the
log by `id > last` while four stores write at once never skips an event (ids taken from a
plain sequence become visible out of order, and such a reader misses some), and every
store's event pump hands every event out, once, in id order."""

from __future__ import annotations

import asyncio

from service.model import Event
from service.store.postgres import PostgresStore
from tests.conftest import wait_for
from tests.store.conftest import new

WRITERS = 4
ROUNDS = 40
PER_ROUND = 5


async def test_a_reader_following_four_writers_misses_no_event(pg_dsn: str) -> None:
    stores = [PostgresStore(pg_dsn) for _ in range(WRITERS)]
    for store in stores:
        await store.open()
    try:
        heard: list[Event] = []
        stores[1].add_listener(heard.extend)
        reader = stores[0]
        followed: list[int] = []
        writing = True

        async def follow() -> None:
            last = 0
            while True:
                done = not writing  # seen before the read: then the read sees every commit
                events = await reader.events_after(last, None, None, 1000)
                if events:
                    followed.extend(e.id for e in events)
                    last = events[-1].id
                elif done:
                    return  # a read begun after the writers were done found nothing more

        async def write(store: PostgresStore) -> None:
            for _ in range(ROUNDS):
                await asyncio.gather(*(store.insert(new()) for _ in range(PER_ROUND)))

        follower = asyncio.create_task(follow())
        await asyncio.gather(*(write(store) for store in stores))
        writing = False
        await asyncio.wait_for(follower, 30)

        stored = [e.id for e in await reader.events_after(0, None, None, 100_000)]
        assert len(stored) == WRITERS * ROUNDS * PER_ROUND
        assert followed == stored  # nothing skipped, nothing twice, in order

        async def all_heard() -> bool:
            return len(heard) >= len(stored)

        await wait_for(all_heard, 20, "the event pump to hand out every event")
        assert [e.id for e in heard] == stored
    finally:
        for store in stores:
            await store.close()

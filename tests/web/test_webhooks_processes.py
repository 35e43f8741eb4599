"""Webhooks across real `sidetask serve` processes: a process SIGKILLed after a change, or
in the middle of its delivery, loses nothing (the delivery was written with the change and
is sent after the restart: at least once, the same delivery id each time); on PostgreSQL
two replicas deliver each delivery once, not twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from service.webhooks import verify
from tests.conftest import ServerProcess, free_port, wait_for
from tests.web.webhook_receiver import Receiver

BASE = "/graphs/hugegraph"
SECRET = "process-secret"
ENV = {
    "SIDETASK_CALLBACK_SECRET": SECRET,
    "SIDETASK_WEBHOOK_ALLOW": "127.0.0.1",
    "SIDETASK_WEBHOOK_BACKOFF": "0.05",
    "SIDETASK_WEBHOOK_BACKOFF_MAX": "0.2",
    # a claim lasts the timeout and 5 s: a killed process's claim comes due after it
    "SIDETASK_WEBHOOK_TIMEOUT": "1",
}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = await Receiver().start()
    yield found
    await found.stop()


async def submit(http: ClientSession, server: ServerProcess, callback: str) -> int:
    async with asyncio.timeout(10):
        async with http.post(
            f"{server.url}{BASE}/jobs/echo", json={"x": 1}, params={"callback": callback}
        ) as response:
            assert response.status == 201, await response.text()
            return int((await response.json())["task_id"])


async def deliveries(http: ClientSession, server: ServerProcess, task_id: int) -> list[Any]:
    async with asyncio.timeout(10):
        async with http.get(f"{server.url}{BASE}/tasks/{task_id}/deliveries") as response:
            assert response.status == 200, await response.text()
            return list((await response.json())["deliveries"])


async def delivered(
    http: ClientSession, server: ServerProcess, task_id: int, timeout: float = 30
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        found = await deliveries(http, server, task_id)
        return found[0] if found and found[0]["state"] == "delivered" else None

    return await wait_for(probe, timeout, f"task {task_id}'s delivery")


async def test_a_process_killed_in_the_middle_of_a_delivery_delivers_it_after_its_restart(
    server_factory: Callable[..., ServerProcess],
    any_db: Path | str,
    http: ClientSession,
    receiver: Receiver,
) -> None:
    """On PostgreSQL the process started after is another replica: it takes the dead one's
    claim over once its lease has run out."""
    receiver.plan = ["hold"]  # the first try gets no answer: the process dies meanwhile
    db = any_db
    first = server_factory(db, env=ENV)
    await first.wait_ready()
    task_id = await submit(http, first, receiver.url)
    await asyncio.wait_for(receiver.arrived.wait(), 15)  # sent, not yet answered
    first.kill()
    receiver.release.set()
    second = server_factory(db, env=ENV)
    await second.wait_ready()
    delivery = await delivered(http, second, task_id)
    # at least once: the try the kill cut short, then the one after the restart, both of
    # the one delivery, with its one id
    assert len(receiver.hits) >= 2
    assert set(receiver.delivery_ids()) == {delivery["delivery"]}
    assert all(verify(SECRET, h.headers["Sidetask-Signature"], h.body) for h in receiver.hits)
    assert len(await deliveries(http, second, task_id)) == 1
    # the cut-short try left no answer: only the one recorded after the restart
    assert [a["code"] for a in delivery["answers"]] == [200]


async def test_a_process_killed_after_the_change_delivers_it_after_its_restart(
    server_factory: Callable[..., ServerProcess],
    tmp_path: Path,
    http: ClientSession,
) -> None:
    port = free_port()  # the receiver is down while the first process runs
    url = f"http://127.0.0.1:{port}/hook"
    db = tmp_path / "sidetask.db"
    first = server_factory(db, env=ENV)
    await first.wait_ready()
    task_id = await submit(http, first, url)

    async def ended() -> bool:
        async with http.get(f"{first.url}{BASE}/tasks/{task_id}") as response:
            return bool((await response.json())["task_status"] == "success")

    await wait_for(ended, 15, "the task's end")
    first.kill()
    receiver = await Receiver().start(port)
    try:
        second = server_factory(db, env=ENV)
        await second.wait_ready()
        delivery = await delivered(http, second, task_id)
        assert receiver.delivery_ids() == [delivery["delivery"]]
        assert delivery["answers"][-1]["code"] == 200
    finally:
        await receiver.stop()


async def test_two_postgresql_replicas_deliver_each_delivery_once(
    server_factory: Callable[..., ServerProcess],
    pg_dsn: str,
    http: ClientSession,
    receiver: Receiver,
) -> None:
    replicas = [server_factory(pg_dsn, env=ENV) for _ in range(2)]
    for replica in replicas:
        await replica.wait_ready(30)
    tasks = [await submit(http, replicas[n % 2], receiver.url) for n in range(30)]
    for task_id in tasks:
        await delivered(http, replicas[0], task_id)
    counts = Counter(receiver.delivery_ids())
    assert len(counts) == 30
    assert set(counts.values()) == {1}, "a delivery was sent twice"
    # each recorded once, seen alike from the other replica
    for task_id in tasks:
        (delivery,) = await deliveries(http, replicas[1], task_id)
        assert delivery["attempts"] == 1

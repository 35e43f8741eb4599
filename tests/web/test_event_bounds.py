"""Bounds on what a subscriber or a list costs: events without the input, replays in
pieces, a stalled replay cut off, disconnects told from subscribers that fell behind, the
cap on open streams, and large lists written as they are read, byte for byte."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestServer

from service.config import Settings
from service.events import EventBus, Scope
from service.model import Event, EventKind, GraphRef, Status
from service.web import create_app
from service.web.keys import EVENTS
from tests.conftest import get_task, make_settings, submit, wait_for, wait_status
from tests.sse import SSEReader, stalled
from tests.sup_util import rows
from tests.web.test_cli import sidetask

BASE = "/graphs/hugegraph"
KIB = 1024


@pytest.fixture
def settings(tmp_path: Path, any_db: Path | str) -> Settings:
    """The `client` fixture's settings: the tests of what is stored and replayed run on both
    stores."""
    return make_settings(tmp_path, any_db)


def stored(db: Path | str) -> list[tuple[int, str, bytes]]:
    """The event log as stored: id, kind and the data's bytes."""
    return [
        (int(i), str(kind), data.encode() if isinstance(data, str) else bytes(data))
        for i, kind, data in rows(db, "SELECT id, kind, data FROM events ORDER BY id")
    ]


async def test_only_task_created_and_a_task_streams_first_state_carry_the_input(
    client: Any, settings: Any
) -> None:
    body = {"steps": 5, "interval": 0.05, "note": "x" * 1000}
    task_id = await submit(client, BASE, "sleep", body, delay=0.2)
    async with client.get(f"{BASE}/tasks/{task_id}/events") as response:
        live = await SSEReader(response).collect()
    # the first event is the task as it is now, built from the task: all of it
    assert orjson.loads(live[0].json["task_input"]) == body
    assert live[-1].json["task_status"] == "success"
    assert all("task_input" not in e.json for e in live[1:])
    async with client.get(
        f"{BASE}/tasks/{task_id}/events", params={"last_event_id": "0"}
    ) as response:
        replayed = await SSEReader(response).collect()
    kinds = [e.event for e in replayed]
    assert kinds[0] == "task.created" and "task.progress" in kinds and "task.status" in kinds
    assert orjson.loads(replayed[0].json["task_input"]) == body
    assert all("task_input" not in e.json for e in replayed[1:])
    # the rest of the task is there as GET gives it
    task = await get_task(client, BASE, task_id)
    assert replayed[-1].json == {k: v for k, v in task.items() if k != "task_input"}
    # and so it is stored: the log does not repeat the input either
    for _, kind, data in stored(settings.db):
        assert ("task_input" in orjson.loads(data)) == (kind == "task.created")


async def test_a_replay_of_large_events_arrives_whole_in_order(
    aiohttp_client: Any, tmp_path: Path, any_db: Path | str
) -> None:
    # events of 300 KiB against a 64 KiB bound: each page is one event, written in pieces
    settings = make_settings(tmp_path, any_db, sse_buffer_bytes=64 * KIB)
    client = await aiohttp_client(create_app(settings))
    ids = [
        await submit(client, BASE, "echo", {"n": n, "blob": "y" * (300 * KIB)}) for n in range(4)
    ]
    for task_id in ids:
        await wait_status(client, BASE, task_id, "success")
    log = stored(settings.db)
    async with client.get("/events", headers={"Last-Event-ID": "0"}) as response:
        reader = SSEReader(response)
        events = await reader.until(lambda e: e.id == log[-1][0], timeout=30)
    assert [(e.id, e.event, e.data.encode()) for e in events] == log
    assert client.app[EVENTS].dropped == 0


async def test_a_stalled_replay_is_cut_off_and_logged_as_fallen_behind(
    aiohttp_client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, any_db: Path | str
) -> None:
    settings = make_settings(tmp_path, any_db, sse_buffer_bytes=64 * KIB, sse_stall_seconds=0.2)
    client = await aiohttp_client(create_app(settings))
    bus = client.app[EVENTS]
    # 16 MB of events: more than the kernel's socket buffers take
    for n in range(10):
        await wait_status(
            client,
            BASE,
            await submit(client, BASE, "echo", {"blob": "z" * (800 * KIB), "n": n}),
            "success",
        )
    caplog.set_level(logging.DEBUG, logger="sidetask.events")
    writer = await stalled(client.port, "/events", "Last-Event-ID: 0\r\n", receive_buffer=16 * KIB)
    try:

        async def cut() -> list[str]:
            return [r.getMessage() for r in caplog.records if "fell behind" in r.getMessage()]

        (line,) = await wait_for(cut, 10, "the stalled replay to be cut")
    finally:
        writer.close()
    assert line.startswith("dropping a subscriber that fell behind (every graph): ")
    assert line.endswith(" bytes waiting") and int(line.split(": ")[1].split()[0]) > 64 * KIB
    assert bus.dropped == 1
    assert not any("disconnected" in r.getMessage() for r in caplog.records)

    async def gone() -> bool:
        return bus.subscriber_count == 0

    await wait_for(gone, 5, "the cut stream to end")


async def test_a_subscriber_that_leaves_is_logged_as_a_disconnect(
    aiohttp_client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = await aiohttp_client(create_app(make_settings(tmp_path, sse_keepalive=0.05)))
    bus = client.app[EVENTS]
    caplog.set_level(logging.DEBUG, logger="sidetask.events")
    response = await client.get(f"{BASE}/events", params={"status": "success"})
    await response.content.readline()  # the retry hint: it is open
    response.close()  # the client leaves; the next keep-alive finds its connection gone

    async def logged() -> list[str]:
        return [r.getMessage() for r in caplog.records if "disconnected" in r.getMessage()]

    (line,) = await wait_for(logged, 10, "the disconnect to be logged")
    assert line == "a subscriber disconnected (graph DEFAULT/hugegraph, status success)"
    assert [r.levelno for r in caplog.records if r.getMessage() == line] == [logging.DEBUG]
    assert not any("fell behind" in r.getMessage() for r in caplog.records)
    assert bus.dropped == 0 and bus.subscriber_count == 0


async def test_a_subscriber_that_leaves_a_real_server_is_logged_as_a_disconnect(
    server_factory: Any, http: Any
) -> None:
    server = server_factory(env={"SIDETASK_LOG_LEVEL": "DEBUG", "SIDETASK_SSE_KEEPALIVE": "0.05"})
    await server.wait_ready()
    response = await http.get(f"{server.url}{BASE}/events")
    await response.content.readline()  # the retry hint: it is open
    response.close()  # as Ctrl-C on `sidetask watch` or a closed tab does

    async def logged() -> bool:
        return "a subscriber disconnected (graph DEFAULT/hugegraph)" in server.output()

    await wait_for(logged, 10, "the disconnect in the server's log")
    assert "fell behind" not in server.output()


async def test_streams_past_max_streams_are_a_503_with_retry_after(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, max_streams=2, sse_keepalive=0.05, sse_retry_ms=2500)
    client = await aiohttp_client(create_app(settings))
    first = await client.get("/events")
    second = await client.get(
        f"{BASE}/tasks/{await submit(client, BASE, 'sleep', {'steps': 1}, delay=60)}/events"
    )
    try:
        assert (first.status, second.status) == (200, 200)
        refused = await client.get(f"{BASE}/events")
        assert refused.status == 503
        assert refused.headers["Retry-After"] == "3"
        body = await refused.json()
        assert body["exception"] == "ServiceUnavailableException"
        assert "max_streams" in body["message"] and "2" in body["message"]
        metrics = await (await client.get("/metrics")).text()
        assert "sidetask_sse_subscribers 2.0" in metrics.splitlines()
    finally:
        first.close()

    async def opens() -> bool:
        response = await client.get("/events")
        response.close()
        return response.status == 200

    await wait_for(opens, 10, "a stream to open once another closed")
    second.close()


async def test_a_backlog_over_its_bound_is_let_go_and_counted() -> None:
    bus = EventBus()
    written: list[bytes] = []
    subscription = bus.subscribe(Scope(), lambda data: written.append(data), max_backlog_bytes=100)
    graph = GraphRef("DEFAULT", "hugegraph")

    def event(event_id: int, size: int) -> Event:
        return Event(event_id, EventKind.STATUS, 1, graph, "echo", Status.RUNNING, b"x" * size)

    bus.publish([event(1, 60), event(2, 60)])
    await asyncio.sleep(0)  # the bus flushes on the next loop iteration
    assert (subscription.overflows, subscription.backlog) == (1, [])  # the store has them
    bus.publish([event(3, 10)])
    await asyncio.sleep(0)
    subscription.last_id = 2  # what the replay read from the store
    assert [e.id for e in bus.go_live(subscription)] == [3]
    assert written == [] and bus.dropped == 0


def whole(tasks: list[dict[str, Any]], **rest: Any) -> bytes:
    """What json_response writes for a list: orjson of the object."""
    return orjson.dumps({"tasks": tasks, **rest})


async def test_a_list_of_large_tasks_is_streamed_byte_for_byte(client: Any) -> None:
    ids = [
        await submit(client, BASE, "echo", {"n": n, "blob": "w" * (200 * KIB)}) for n in range(4)
    ]
    ids.insert(2, await submit(client, BASE, "echo", {"small": True}))
    for task_id in ids:
        await wait_status(client, BASE, task_id, "success")
    tasks = [await get_task(client, BASE, task_id) for task_id in sorted(ids)]

    async def raw(**query: str) -> tuple[bytes, Any]:
        async with client.get(f"{BASE}/tasks", params=query) as response:
            assert response.status == 200
            return await response.read(), response.headers

    body, headers = await raw(limit="-1")
    assert body == whole(tasks)
    assert (
        headers["Transfer-Encoding"] == "chunked"
        and headers["Content-Type"] == "application/json;charset=UTF-8"
    )
    assert (await raw(order="desc"))[0] == whole(tasks[::-1])
    by_id = {task["id"]: task for task in tasks}
    assert (await raw(ids=str(ids[3]), limit="-1"))[0] == whole([by_id[ids[3]]])
    first, _ = await raw(limit="3", page="")
    token = orjson.loads(first)["page"]
    assert first == whole(tasks[:3], page=token)
    assert (await raw(limit="3", page=token))[0] == whole(tasks[3:], page=None)
    # a small page is one body with its length, as before
    small, headers = await raw(ids=str(ids[2]))
    assert small == whole([by_id[ids[2]]]) and headers["Content-Length"] == str(len(small))


async def test_watch_keeps_the_total_it_read_from_the_input(server: TestServer) -> None:
    url = str(server.make_url("")).rstrip("/")
    # echo reports no progress and declares no total: only the input's `total` gives one,
    # and only the watch's first event carries the input
    ran = await sidetask("submit", "echo", "--input", '{"total": 4}', "--watch", "--url", url)
    assert ran.code == 0, ran.err
    lines = [line for line in ran.out.splitlines() if line.startswith("task ")]
    assert any(" success " in line for line in lines), ran.out
    assert all(line.endswith(" progress 0/4") for line in lines), ran.out

"""Server-Sent Events (SPEC 7): wire format, replay, fan-out, slow subscribers, stream ends;
on both stores (on PostgreSQL a replica's event pump feeds the streams)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from service.config import Settings
from service.web import create_app
from service.web.keys import EVENTS
from tests.conftest import make_settings, submit, wait_for, wait_status
from tests.sse import SSEReader
from tests.sup_util import rows, to_queued

SLEEP = {"steps": 5, "interval": 0.05}


@pytest.fixture
def db(any_db: Path | str) -> Path | str:
    return any_db


@pytest.fixture
def settings(tmp_path: Path, db: Path | str) -> Settings:
    """The `client` fixture's settings, on both stores."""
    return make_settings(tmp_path, db)


def stored_events(db: Path | str, task_id: int | None = None) -> list[tuple[int, str, str | None]]:
    sql = "SELECT id, kind, status FROM events"
    found = rows(
        db,
        sql + (" WHERE task_id = ?" if task_id else "") + " ORDER BY id",
        (task_id,) if task_id else (),
    )
    return [(int(r[0]), str(r[1]), r[2]) for r in found]


async def test_wire_format(client: Any, base: str) -> None:
    task_id = await submit(client, base, "echo", {"x": 1})
    await wait_status(client, base, task_id, "success")
    async with client.get(f"{base}/tasks/{task_id}/events") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Accel-Buffering"] == "no"
        body = (await response.read()).decode()
    # a retry hint, then the task's current state as one event; the stream then ends
    blocks = body.split("\n\n")
    assert blocks[0] == "retry: 2000"
    lines = blocks[1].split("\n")
    assert lines[0].startswith("id: ") and int(lines[0][4:]) > 0
    assert lines[1] == "event: task.status"
    assert lines[2].startswith("data: {")
    assert len(lines) == 3  # one line of compact JSON
    assert '", "' not in lines[2] and '": ' not in lines[2]
    data = orjson.loads(lines[2][6:])
    assert data["id"] == task_id and data["task_status"] == "success"
    assert list(data)[:5] == [
        "task_name",
        "task_progress",
        "task_create",
        "task_status",
        "task_update",
    ]
    assert blocks[2:] == [""]


async def test_task_stream_follows_a_task_to_its_end(client: Any, base: str, settings: Any) -> None:
    task_id = await submit(client, base, "sleep", SLEEP, delay=0.3)
    async with client.get(f"{base}/tasks/{task_id}/events") as response:
        events = await SSEReader(response).collect()
    kinds = [(e.event, e.json["task_status"]) for e in events]
    assert kinds[0] == ("task.status", "new")  # the current state first
    statuses = [s for k, s in kinds if k == "task.status"]
    assert statuses == ["new", *to_queued(settings.db), "queued", "running", "success"]
    progress = [e.json["task_progress"] for e in events if e.event == "task.progress"]
    assert progress == sorted(progress) and progress and progress[-1] <= 5
    assert events[-1].json["task_progress"] == 5
    ids = [e.id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # every live event is the stored one, in order
    stored = stored_events(settings.db, task_id)
    assert [(e.id, e.event) for e in events[1:]] == [
        (i, k) for i, k, _ in stored if i > events[0].id
    ]


async def test_unknown_task_stream_is_a_404(client: Any, base: str) -> None:
    response = await client.get(f"{base}/tasks/4242/events")
    assert response.status == 404
    assert (await response.json())["message"] == "Can't find task with id '4242'"
    response = await client.get(f"{base}/tasks/4242/events", headers={"Last-Event-ID": "0"})
    assert response.status == 404


async def test_bad_last_event_id_is_a_400(client: Any, base: str) -> None:
    response = await client.get(f"{base}/events", headers={"Last-Event-ID": "abc"})
    assert response.status == 400
    assert "Last-Event-ID" in (await response.json())["message"]


async def test_replay_after_a_disconnect_gives_every_event_once_in_order(
    client: Any, base: str, settings: Any
) -> None:
    first = await submit(client, base, "sleep", SLEEP)
    async with client.get(f"{base}/events") as response:
        reader = SSEReader(response)
        seen = await reader.until(lambda e: e.event == "task.progress")
    # disconnected; more happens meanwhile
    await wait_status(client, base, first, "success")
    second = await submit(client, base, "echo", {"n": 2})
    await wait_status(client, base, second, "success")
    async with client.get(
        f"{base}/events", headers={"Last-Event-ID": str(seen[-1].id)}
    ) as response:
        reader = SSEReader(response)
        rest = await reader.until(
            lambda e: e.json.get("id") == second and e.json.get("task_status") == "success"
        )
    got = [e.id for e in seen + rest]
    stored = [i for i, _, _ in stored_events(settings.db) if seen[0].id <= i <= rest[-1].id]
    assert got == stored


async def test_last_event_id_as_query_parameter(client: Any, base: str) -> None:
    task_id = await submit(client, base, "echo", {})
    await wait_status(client, base, task_id, "success")
    async with client.get(
        f"{base}/tasks/{task_id}/events", params={"last_event_id": "0"}
    ) as response:
        events = await SSEReader(response).collect()
    assert events[0].event == "task.created"
    assert events[-1].json["task_status"] == "success"


async def test_graph_stream_filters_by_status_and_type(client: Any, base: str) -> None:
    async with client.get(
        f"{base}/events", params={"status": "SUCCESS", "type": "echo"}
    ) as response:
        reader = SSEReader(response)
        await submit(client, base, "sleep", {"steps": 1, "interval": 0})
        echo = await submit(client, base, "echo", {})
        events = await reader.until(lambda e: e.json.get("id") == echo)
    assert all(e.json["task_type"] == "echo" and e.json["task_status"] == "success" for e in events)


async def test_graph_stream_type_is_a_registered_one_as_in_the_task_list(
    client: Any, base: str
) -> None:
    for query in ({"type": "ech"}, {"type": ""}, [("type", "echo"), ("type", "sleep")]):
        stream = await client.get(f"{base}/events", params=query)
        listing = await client.get(f"{base}/tasks", params=query)
        assert (stream.status, listing.status) == (400, 400), query
        message = (await stream.json())["message"]
        assert message == (await listing.json())["message"]
    response = await client.get(f"{base}/events", params={"type": "ech"})
    assert (await response.json())["message"].startswith("Invalid type 'ech', valid types are: ")


async def test_graph_stream_sees_only_its_graph_and_service_stream_sees_all(client: Any) -> None:
    async with (
        client.get("/graphspaces/gs1/graphs/other/events") as other,
        client.get("/events") as everything,
    ):
        await submit(client, "/graphs/hugegraph", "echo", {})
        mine = await submit(client, "/graphspaces/gs1/graphs/other", "echo", {})
        events = await SSEReader(other).until(lambda e: e.json.get("task_status") == "success")
        assert {e.json["id"] for e in events} == {mine}
        assert {e.json["task_graph"] for e in events} == {"other"}
        seen = await SSEReader(everything).until(
            lambda e: e.json.get("id") == mine and e.json.get("task_status") == "success"
        )
        assert {e.json["task_graph"] for e in seen} == {"hugegraph", "other"}


async def test_stream_of_a_deleted_task_ends(client: Any, base: str) -> None:
    task_id = await submit(client, base, "sleep", {"steps": 100, "interval": 0.05})
    await wait_status(client, base, task_id, "running")
    async with client.get(f"{base}/tasks/{task_id}/events") as response:
        reader = SSEReader(response)
        await reader.next()
        deleted = await client.delete(f"{base}/tasks/{task_id}", params={"force": "true"})
        assert deleted.status == 204
        rest = await reader.collect()
    assert rest[-1].event == "task.deleted"
    assert rest[-1].json == {"id": task_id}


async def test_keepalive_comments_flow_while_nothing_happens(
    aiohttp_client: Any, tmp_path: Path, db: Path | str
) -> None:
    client = await aiohttp_client(create_app(make_settings(tmp_path, db, sse_keepalive=0.05)))
    comments = []
    async with client.get("/events") as response, asyncio.timeout(10):
        while len(comments) < 2:
            line = (await response.content.readline()).decode()
            if line.startswith(":"):
                comments.append(line.strip())
    assert comments == [": keep-alive", ": keep-alive"]


async def test_a_subscriber_that_never_reads_does_not_delay_another(
    aiohttp_client: Any, tmp_path: Path, db: Path | str
) -> None:
    settings = make_settings(tmp_path, db, sse_buffer_bytes=1024 * 1024)
    client = await aiohttp_client(create_app(settings))
    bus = client.app[EVENTS]
    # A raw connection that asks for the stream and then never reads a byte.
    _, writer_sock = await asyncio.open_connection("127.0.0.1", client.port)
    writer_sock.write(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{client.port}\r\n\r\n".encode())
    await writer_sock.drain()

    async def subscribed() -> bool:
        return bus.subscriber_count >= 1

    await wait_for(subscribed, 5, "the stalled subscriber")
    big = {"blob": "x" * 20_000}
    async with client.get("/graphs/hugegraph/events") as response:
        reader = SSEReader(response)
        finished: set[int] = set()

        def all_done(event: Any) -> bool:
            if event.json.get("task_status") == "success":
                finished.add(event.json["id"])
            return len(finished) == 200

        reading = asyncio.create_task(reader.until(all_done, timeout=60))
        ids = [await submit(client, "/graphs/hugegraph", "echo", big) for _ in range(200)]
        await reading
    assert finished == set(ids)
    # the stalled subscriber was cut off instead of holding anyone up
    assert bus.dropped >= 1
    writer_sock.close()


async def test_a_thousand_subscribers_of_one_task_all_see_it_complete(
    client: Any, base: str
) -> None:
    task_id = await submit(client, base, "sleep", {"steps": 1, "interval": 0.01}, delay=60)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        url = str(client.make_url(f"{base}/tasks/{task_id}/events"))
        responses = await asyncio.gather(*(session.get(url) for _ in range(1000)))
        try:
            readers = [SSEReader(r) for r in responses]
            # each has its snapshot: it is subscribed
            await asyncio.gather(*(r.next() for r in readers))
            resumed = await client.put(f"{base}/tasks/{task_id}", params={"action": "pause"})
            assert resumed.status == 202
            resumed = await client.put(f"{base}/tasks/{task_id}", params={"action": "resume"})
            assert resumed.status == 202
            streams = await asyncio.gather(*(r.collect(timeout=60) for r in readers))
        finally:
            for response in responses:
                response.release()
    assert all(s and s[-1].json["task_status"] == "success" for s in streams)


@pytest.mark.parametrize("signal_name", ["SIGTERM"])
async def test_open_streams_end_cleanly_on_shutdown_before_the_drain(
    server_factory: Any, http: aiohttp.ClientSession, signal_name: str, db: Path | str
) -> None:
    server = server_factory(db)
    await server.wait_ready()
    async with http.post(
        f"{server.url}/graphs/hugegraph/jobs/sleep", json={"steps": 40, "interval": 0.05}
    ) as response:
        task_id = (await response.json())["task_id"]
    async with http.get(f"{server.url}/graphs/hugegraph/tasks/{task_id}/events") as response:
        reader = SSEReader(response)
        await reader.until(lambda e: e.json["task_status"] == "running")
        server.proc.terminate()
        rest = await reader.collect(timeout=20)  # ends without an error: a clean end of stream
    # the stream ended before the drain finished the job
    assert all(e.json["task_status"] != "success" for e in rest)
    assert server.proc.wait(30) == 0


async def test_replay_after_a_server_restart(
    server_factory: Any, http: aiohttp.ClientSession, db: Path | str
) -> None:
    server = server_factory(db)
    await server.wait_ready()
    async with http.post(
        f"{server.url}/graphs/hugegraph/jobs/sleep", json={"steps": 3, "interval": 0.05}
    ) as response:
        task_id = (await response.json())["task_id"]
    async with http.get(
        f"{server.url}/graphs/hugegraph/tasks/{task_id}/events", params={"last_event_id": "0"}
    ) as response:
        before = await SSEReader(response).collect()
    assert server.terminate() == 0
    restarted = server_factory(db)
    await restarted.wait_ready()
    async with http.post(f"{restarted.url}/graphs/hugegraph/jobs/echo", json={}) as response:
        later = (await response.json())["task_id"]
    cut = before[2].id  # as if the client had dropped after the third event
    async with http.get(f"{restarted.url}/events", headers={"Last-Event-ID": str(cut)}) as response:
        after = await SSEReader(response).until(
            lambda e: e.json.get("id") == later and e.json.get("task_status") == "success"
        )
    ids = [e.id for e in before[:3]] + [e.id for e in after]
    stored = [i for i, _, _ in stored_events(db)]
    assert ids == stored[: len(ids)]
    assert [e.id for e in after][: len(before) - 3] == [e.id for e in before[3:]]

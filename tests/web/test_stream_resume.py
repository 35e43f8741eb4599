"""Every stream resumed from every kind of id (SPEC 7): the task stream, the graph stream
with and without its filters and the service stream, each resumed with the Last-Event-ID
header and with the `last_event_id` query parameter.

Each resume gets exactly the stored events after the id that match the stream, in id
order, no duplicate, no gap, checked against the `events` table: a task stream to its end;
a graph or service stream up to a marker task submitted after it connected, whose event
must come right after the replay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from service import clock
from service.client import Client
from service.web.keys import SUPERVISOR
from tests.conftest import submit, wait_status
from tests.sse import SSEEvent, SSEReader
from tests.sup_util import Start, rows

COMPLETED = ("success", "failed", "cancelled")
A = "/graphs/hugegraph"  # DEFAULT/hugegraph
A_SPACE = "/graphspaces/DEFAULT/graphs/hugegraph"
B = "/graphspaces/gs1/graphs/other"


@dataclass(frozen=True)
class Stored:
    id: int
    task_id: int
    graph: str
    kind: str
    task_type: str
    status: str | None


@pytest.fixture
def db(any_db: Path | str) -> Path | str:
    """On both stores: every stream and every kind of id on SQLite and on PostgreSQL."""
    return any_db


def stored(db: Path | str) -> list[Stored]:
    return [
        Stored(int(i), int(t), f"{space}/{graph}", str(k), str(ty), s)
        for i, t, space, graph, k, ty, s in rows(
            db,
            "SELECT id, task_id, graphspace, graph, kind, task_type, status FROM events ORDER BY id",
        )
    ]


@dataclass
class World:
    """Tasks of two graphs whose events interleave, one deleted, one still running."""

    client: TestClient
    db: Path | str
    dir: Path
    #: a sleep-like task of A that reported progress while B's and A's others ran
    long: int = 0
    other_graph: int = 0
    failed: int = 0
    deleted: int = 0
    #: a task of A still running (its gate is `gate`)
    live: int = 0

    @property
    def gate(self) -> Path:
        return self.dir / "live-gate"


async def build(client: TestClient, db: Path | str, tmp_path: Path) -> World:
    w = World(client, db, tmp_path)
    # created first, run last: its events come before and after everybody else's
    w.live = await submit(client, A, "gate", {"path": str(w.gate)}, delay=3600)
    first_gate = tmp_path / "long-gate"
    w.long = await submit(client, A, "gate", {"path": str(first_gate), "progress": 7})
    await wait_status(client, A, w.long, "running")
    w.other_graph = await submit(client, B, "echo", {"graph": "other"})
    await wait_status(client, B, w.other_graph, "success")
    await wait_status(client, A, await submit(client, A, "echo", {"n": 1}), "success")
    w.failed = await submit(client, A, "fail", {"message": "broken"})
    await wait_status(client, A, w.failed, "failed")
    first_gate.touch()
    await wait_status(client, A, w.long, "success")
    w.deleted = await submit(client, A, "echo", {"soon": "deleted"})
    await wait_status(client, A, w.deleted, "success")
    for action in ("pause", "resume"):
        response = await client.put(f"{A}/tasks/{w.live}", params={"action": action})
        assert response.status == 202, await response.text()
    await wait_status(client, A, w.live, "running")
    await wait_status(client, A, await submit(client, A, "echo", {"n": 2}), "success")
    assert (await client.delete(f"{A}/tasks/{w.deleted}")).status == 204
    return w


@dataclass(frozen=True)
class Stream:
    #: the path, given the world
    path: Callable[[World], str]
    #: which stored events it carries
    matches: Callable[[World, Stored], bool]
    #: the task a task stream follows (None: a graph's or the service's, which do not end)
    task: Callable[[World], int] | None = None
    query: tuple[tuple[str, str], ...] = ()


def in_a(e: Stored) -> bool:
    return e.graph == "DEFAULT/hugegraph"


STREAMS = {
    "task": Stream(
        lambda w: f"{A}/tasks/{w.long}/events", lambda w, e: e.task_id == w.long, lambda w: w.long
    ),
    "task_by_graphspace": Stream(
        lambda w: f"{A_SPACE}/tasks/{w.long}/events",
        lambda w, e: e.task_id == w.long,
        lambda w: w.long,
    ),
    "running_task": Stream(
        lambda w: f"{A}/tasks/{w.live}/events", lambda w, e: e.task_id == w.live, lambda w: w.live
    ),
    "deleted_task": Stream(
        lambda w: f"{A}/tasks/{w.deleted}/events",
        lambda w, e: e.task_id == w.deleted,
        lambda w: w.deleted,
    ),
    "graph": Stream(lambda w: f"{A}/events", lambda w, e: in_a(e)),
    # the same graph under its graphspace's prefix (SPEC 1)
    "graph_by_graphspace": Stream(lambda w: f"{A_SPACE}/events", lambda w, e: in_a(e)),
    "graph_by_status": Stream(
        lambda w: f"{A}/events",
        lambda w, e: in_a(e) and e.status == "success",
        query=(("status", "SUCCESS"),),
    ),
    "graph_by_type": Stream(
        lambda w: f"{A}/events",
        lambda w, e: in_a(e) and e.task_type == "echo",
        query=(("type", "echo"),),
    ),
    "graph_by_both": Stream(
        lambda w: f"{A}/events",
        lambda w, e: in_a(e) and e.task_type == "echo" and e.status == "success",
        query=(("status", "success"), ("type", "echo")),
    ),
    "service": Stream(lambda w: "/events", lambda w, e: True),
}


def pick(kind: str, w: World, stream: Stream, events: list[Stored]) -> int:
    """The id a client resumes from."""
    own = [e.id for e in events if stream.matches(w, e)]
    assert len(own) >= 3, own
    if kind == "zero":
        return 0
    if kind in ("middle", "purged"):
        return own[len(own) // 2]
    if kind == "last":
        return own[-1]
    if kind == "foreign":
        # amid its own, an event of another task or graph (the service stream carries them all)
        foreign = [
            e.id
            for e in events
            if own[0] < e.id < own[-1] and (not stream.matches(w, e) or e.graph == "gs1/other")
        ]
        assert foreign, "the world's events do not interleave"
        return foreign[len(foreign) // 2]
    if kind == "past_end":
        return events[-1].id + 1000
    raise AssertionError(kind)


async def purge_all(w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stored event becomes older than event_retention and is purged; then more happen."""
    later = clock.now_ms() + 2 * 86400 * 1000  # past event_retention, within task_retention
    monkeypatch.setattr(clock, "now_ms", lambda: later)
    await w.client.app[SUPERVISOR].purge()
    assert stored(w.db) == []
    fresh = await submit(w.client, A, "echo", {"after": "the purge"})
    await wait_status(w.client, A, fresh, "success")


async def read(
    w: World, stream: Stream, headers: dict[str, str], query: dict[str, str]
) -> list[SSEEvent]:
    """What the stream sends: a task stream to its end (the running task's gate is opened
    once it is connected), another up to the marker's success."""
    params = dict(stream.query) | query
    async with w.client.get(stream.path(w), headers=headers, params=params) as response:
        if response.status == 204:  # a task stream with nothing left: it said so at once
            assert stream.task is not None and await response.read() == b""
            return []
        assert response.status == 200, await response.text()
        reader = SSEReader(response)
        if stream.task is not None:
            w.gate.touch()
            events = await reader.collect()
            assert events, "a task stream with nothing to send is a 204"
            return events
        marker = await submit(w.client, A, "echo", {"marker": True})
        got = await reader.until(
            lambda e: e.json.get("id") == marker and e.json.get("task_status") == "success"
        )
    await wait_status(w.client, A, marker, "success")
    return got


KINDS = ("zero", "middle", "last", "foreign", "past_end", "purged")
CARRIERS = ("header", "query")
CASES = [(s, k, c) for s in STREAMS for k in KINDS for c in CARRIERS]


@pytest.mark.parametrize(("name", "kind", "carrier"), CASES, ids=["-".join(c) for c in CASES])
async def test_resume(
    start: Start,
    db: Path | str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    kind: str,
    carrier: str,
) -> None:
    stream = STREAMS[name]
    w = await build(await start(), db, tmp_path)
    try:
        after = pick(kind, w, stream, stored(db))
        if kind == "purged":
            await purge_all(w, monkeypatch)
        text = str(after)
        headers, query = (
            ({"Last-Event-ID": text}, {}) if carrier == "header" else ({}, {"last_event_id": text})
        )
        if name == "deleted_task" and (kind in ("last", "past_end", "purged")):
            # nothing of it is left after that id: it is gone
            response = await w.client.get(stream.path(w), headers=headers, params=query)
            assert response.status == 404
            assert (await response.json())["message"] == f"Can't find task with id '{w.deleted}'"
            return
        floor = min(after, stored(db)[-1].id if stored(db) else 0)
        got = await read(w, stream, headers, query)
        check(w, stream, got, floor)
    finally:
        w.gate.touch()


def check(w: World, stream: Stream, got: list[SSEEvent], after: int) -> None:
    """`after`: the id resumed from, or the last stored when the stream connected if that
    is smaller (an id past the end is a client's from elsewhere: it starts from now)."""
    events = stored(w.db)
    end = got[-1].id if got else after
    assert end is not None
    wanted = [e for e in events if after < e.id <= end and stream.matches(w, e)]
    assert [(g.id, g.event) for g in got] == [(e.id, e.kind) for e in wanted]
    for g, e in zip(got, wanted, strict=True):
        body = g.json
        assert body["id"] == e.task_id
        if e.kind != "task.deleted":
            assert body["task_status"] == e.status
    if stream.task is not None:
        # a task stream ends after its completed status (or its deletion), and nothing of
        # it is stored after what it sent; with nothing to send (204) its task had ended
        assert not [e for e in events if e.id > end and stream.matches(w, e)]
        own = [e for e in events if stream.matches(w, e)]
        if own:  # else all were purged: the stream ended for its task was completed
            assert own[-1].kind == "task.deleted" or own[-1].status in COMPLETED


async def test_header_wins_over_the_query_parameter(
    start: Start, db: Path | str, tmp_path: Path
) -> None:
    """A browser's EventSource keeps its URL (with the first `last_event_id`) and sends the
    newer id in the header when it reconnects: the header is the one to follow."""
    w = await build(await start(), db, tmp_path)
    try:
        for name in ("task", "graph", "service"):
            stream = STREAMS[name]
            middle = pick("middle", w, stream, stored(db))
            got = await read(w, stream, {"Last-Event-ID": str(middle)}, {"last_event_id": "0"})
            check(w, stream, got, middle)
            got = await read(w, stream, {"Last-Event-ID": "0"}, {"last_event_id": str(middle)})
            check(w, stream, got, 0)
    finally:
        w.gate.touch()


INVALID = {
    "negative": ("-1", "it must be an event id (an integer >= 0)"),
    "text": ("ten", "it must be an event id (an integer >= 0)"),
    "fraction": ("1.5", "it must be an event id (an integer >= 0)"),
    "huge": ("9" * 30, "it must be at most 9007199254740992"),
    "empty": ("", "it must be an event id (an integer >= 0)"),
}


@pytest.mark.parametrize("carrier", CARRIERS)
async def test_invalid_ids_are_a_400_naming_the_id(start: Start, carrier: str) -> None:
    client = await start()
    task_id = await submit(client, A, "echo", {})
    for path in (f"{A}/tasks/{task_id}/events", f"{A}/events", "/events"):
        for value, why in INVALID.values():
            if carrier == "header":
                response = await client.get(path, headers={"Last-Event-ID": value})
                said = f"Invalid Last-Event-ID '{value}', {why}"
            else:
                response = await client.get(path, params={"last_event_id": value})
                said = f"Invalid Last-Event-ID '{value}' (the query parameter last_event_id), {why}"
            assert response.status == 400, (path, value)
            body = await response.json()
            assert (body["exception"], body["message"]) == ("IllegalArgumentException", said), path
        # a bad one is a 400 even beside a good one
        response = await client.get(
            path, headers={"Last-Event-ID": "0"}, params={"last_event_id": "x"}
        )
        assert response.status == 400


async def test_the_client_ends_a_task_stream_resumed_after_its_end(start: Start) -> None:
    """The server's 204 ends the Python client's stream instead of a reconnection loop."""
    client = await start()
    task_id = await submit(client, A, "echo", {})
    await wait_status(client, A, task_id, "success")
    async with Client(str(client.make_url("")), "DEFAULT/hugegraph", reconnect_delay=0.01) as api:
        everything = [e async for e in api.events(task_id, last_event_id=0)]
        assert everything[-1].kind == "task.status" and everything[-1].task.status == "success"
        last = everything[-1].id
        async with asyncio.timeout(10):
            stream = api.events(task_id, last_event_id=last)
            assert [e async for e in stream] == []
        assert stream.reconnects == 0
        response = await client.get(
            f"{A}/tasks/{task_id}/events", headers={"Last-Event-ID": str(last)}
        )
        assert (response.status, await response.read()) == (204, b"")

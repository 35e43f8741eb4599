"""service.client against a real server on loopback: tasks, pages, actions, errors, and event
streams that come back after a dropped connection without losing or repeating an event."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from service import client as client_module
from service.client import APIError, Client, ConnectionFailed, Event, parse_graph
from service.jsontext import TooDeep
from tests.conftest import free_port, wait_for
from tests.proxy import Proxy

#: every await on the server is bounded by this
STEP = 10.0


@pytest.fixture
async def proxy(server: TestServer) -> AsyncIterator[Proxy]:
    proxy = Proxy(server.port or 0)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def api(server: TestServer) -> AsyncIterator[Client]:
    async with Client(str(server.make_url("")), "DEFAULT/hugegraph") as api:
        yield api


async def collect(stream: Any, until: Any = None, within: float = STEP) -> list[Event]:
    """Events of `stream` until it ends (or `until(event)` holds), within `within` seconds."""
    events: list[Event] = []
    async with asyncio.timeout(within):
        async for event in stream:
            events.append(event)
            if until is not None and until(event):
                break
    return events


async def wait_task(api: Client, task_id: int, *statuses: str) -> Any:
    async def probe() -> Any:
        task = await api.get(task_id)
        return task if task.status in statuses else None

    return await wait_for(probe, STEP, f"task {task_id} to reach {statuses}")


def test_public_names() -> None:
    public = {name for name in vars(client_module) if not name.startswith("_")}
    assert set(client_module.__all__) <= public
    for name in (
        "Client",
        "Task",
        "Event",
        "EventStream",
        "APIError",
        "ConnectionFailed",
        "ClientError",
    ):
        assert name in client_module.__all__


def test_graph_names() -> None:
    assert parse_graph("hugegraph") == ("DEFAULT", "hugegraph")
    assert parse_graph("gs1/other") == ("gs1", "other")
    for bad in ("", "/g", "gs/", "a/b/c"):
        with pytest.raises(ValueError):
            parse_graph(bad)


async def test_submit_get_and_follow_a_task_to_success(api: Client) -> None:
    task_id = await api.submit(
        "sleep", {"steps": 3, "interval": 0.02}, name="three steps", priority=2
    )
    events = await collect(api.events(task_id))
    # first the task's state at subscription, then every change, and the stream ends by itself
    assert events[0].kind == "task.status"
    assert events[-1].kind == "task.status"
    last = events[-1].task
    assert last is not None and last.status == "success" and last.result_value() == 3
    statuses = [e.task.status for e in events if e.task is not None]
    assert "running" in statuses
    progress = [e.task.progress for e in events if e.task is not None]
    assert progress == sorted(progress) and progress[-1] == 3
    ids = [e.id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)

    task = await api.get(task_id)
    assert (task.id, task.name, task.type, task.status) == (
        task_id,
        "three steps",
        "sleep",
        "success",
    )
    assert task.raw["task_priority"] == 2
    assert task.input_value() == {"steps": 3, "interval": 0.02}
    assert task.completed


async def test_list_follows_pages(api: Client) -> None:
    ids = [await api.submit("echo", {"n": n}) for n in range(5)]
    assert [t.id async for t in api.list(page_size=2)] == ids
    assert [t.id async for t in api.list(limit=3, page_size=2)] == ids[:3]
    await wait_task(api, ids[-1], "success")
    await wait_for(lambda: _all_done(api, ids), STEP, "every echo to succeed")
    assert [t.id async for t in api.list("SUCCESS", page_size=1)] == ids
    assert [t.id async for t in api.list("failed")] == []


async def _all_done(api: Client, ids: list[int]) -> bool:
    return all([(await api.get(i)).status == "success" for i in ids])


async def test_actions_and_delete(api: Client) -> None:
    waiting = await api.submit("echo", {}, delay=3600)
    paused = await api.pause(waiting)
    assert paused.status == "pending"
    resumed = await api.resume(waiting)
    assert resumed.status in ("restoring", "queued", "scheduling", "running", "success")
    cancelled = await api.cancel(await api.submit("echo", {}, delay=3600))
    assert cancelled.status == "cancelled" and cancelled.raw["cancelled"] is True

    retried = await api.retry(cancelled.id)
    assert retried.status == "restoring" and retried.retries == 1

    incomplete = await api.submit("echo", {}, delay=3600)
    with pytest.raises(APIError) as refused:
        await api.delete(incomplete)
    assert refused.value.status == 400
    assert refused.value.message == (
        f"Can't delete incomplete task '{incomplete}' in status NEW, Please try to cancel the task first"
    )
    await api.delete(incomplete, force=True)
    with pytest.raises(APIError) as gone:
        await api.get(incomplete)
    assert gone.value.status == 404
    assert gone.value.message == f"Can't find task with id '{incomplete}'"
    assert gone.value.exception == "NotFoundException"


async def test_actions_says_what_each_status_allows(api: Client) -> None:
    allowed = await api.actions()
    assert allowed["new"] == ["cancel", "pause", "force_delete"]
    assert allowed["pending"] == ["cancel", "resume", "force_delete"]
    assert allowed["success"] == ["delete"]
    assert allowed["failed"] == ["retry", "delete"]
    # what the server does holds to it: a completed task refuses a cancel
    done = await api.submit("echo", {})
    await wait_task(api, done, "success")
    assert "cancel" not in allowed["success"]
    with pytest.raises(APIError) as refused:
        await api.cancel(done)
    assert refused.value.status == 400


async def test_errors_carry_the_servers_status_and_message(api: Client, server: TestServer) -> None:
    with pytest.raises(APIError) as unknown_type:
        await api.submit("no-such-type", {})
    assert unknown_type.value.status == 400
    assert "Job type 'no-such-type' is not registered" in unknown_type.value.message

    with pytest.raises(APIError) as bad_status:
        await anext(api.list("sleeping"))
    assert (
        bad_status.value.status == 400 and "Invalid status 'sleeping'" in bad_status.value.message
    )

    async with Client(str(server.make_url("")), "nosuch") as other:
        with pytest.raises(APIError) as no_graph:
            await other.get(1)
    assert (
        no_graph.value.status == 404 and no_graph.value.message == "Graph 'nosuch' does not exist"
    )

    with pytest.raises(APIError) as no_task:
        await anext(api.events(424242))
    assert (
        no_task.value.status == 404 and no_task.value.message == "Can't find task with id '424242'"
    )


async def test_an_input_nested_deeper_than_the_service_takes_is_refused_before_sending() -> None:
    deep: Any = []
    for _ in range(299):
        deep = [deep]
    async with Client(f"http://127.0.0.1:{free_port()}", timeout=5) as api:
        with pytest.raises(TooDeep) as refused:
            await api.submit("echo", {"a": deep})
    assert (
        str(refused.value)
        == "The request body is nested too deeply; at most 254 levels are allowed"
    )


async def test_an_unreachable_server_is_a_connection_failure() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with Client(url, timeout=5) as api:
        with pytest.raises(ConnectionFailed) as failed:
            await api.get(1)
        assert failed.value.message == f"cannot reach {url}: connection refused"
        with pytest.raises(ConnectionFailed) as failed:
            await anext(api.events(1))
        assert failed.value.message == f"cannot reach {url}: connection refused"


async def test_task_stream_resumes_after_a_drop_with_last_event_id(
    api: Client, proxy: Proxy
) -> None:
    async with Client(proxy.url, reconnect_delay=0.02) as through:
        task_id = await through.submit("sleep", {"steps": 8, "interval": 0.1})
        stream = through.events(task_id)
        seen: list[Event] = []
        async with asyncio.timeout(STEP):
            async for event in stream:
                seen.append(event)
                if event.kind == "task.progress" and not stream.reconnects:
                    proxy.cut()  # mid-stream, as a network failure would
        assert stream.reconnects >= 1
    # the second request asked to resume after the last event received before the cut
    resumed = proxy.requests_with(b"Last-Event-ID:")
    assert resumed, "no request carried Last-Event-ID"
    assert seen[-1].task is not None and seen[-1].task.status == "success"

    # nothing lost, nothing twice: the received events are the task's stored ones
    stored = await collect(api.events(task_id, last_event_id=0))
    after_snapshot = [e.id for e in seen[1:]]
    assert after_snapshot == [e.id for e in stored if e.id is not None and e.id > (seen[0].id or 0)]


async def test_graph_stream_with_filters_and_the_service_stream(api: Client) -> None:
    async with api.events(type="echo") as echoes, api.events(service=True) as everything:
        sleeper = await api.submit("sleep", {"steps": 1, "interval": 0.01})
        echo = await api.submit("echo", {"x": 1})
        got = await collect(
            echoes, until=lambda e: e.task_id == echo and e.task is not None and e.task.completed
        )
        assert {e.task_id for e in got} == {echo}
        assert got[0].kind == "task.created"
        every = await collect(
            everything,
            until=lambda e: e.task_id == echo and e.task is not None and e.task.completed,
        )
        assert {sleeper, echo} <= {e.task_id for e in every}

    async with api.events() as graph_stream:
        await api.delete(echo)
        deleted = await collect(graph_stream, until=lambda e: e.kind == "task.deleted")
    assert deleted[-1].data == {"id": echo} and deleted[-1].task is None


async def test_graph_stream_resumes_after_a_drop(api: Client, proxy: Proxy) -> None:
    async with Client(proxy.url, reconnect_delay=0.02) as through:
        async with through.events() as stream:
            first = await api.submit("echo", {"n": 1})
            await collect(stream, until=lambda e: e.task_id == first and e.kind == "task.created")
            proxy.cut()
            # committed while the stream is down: replayed after the reconnection
            second = await api.submit("echo", {"n": 2})
            got = await collect(
                stream, until=lambda e: e.task_id == second and e.kind == "task.created"
            )
            assert stream.reconnects == 1
    assert got[-1].task is not None and got[-1].task.id == second


async def test_credentials_are_sent(proxy: Proxy) -> None:
    async with Client(proxy.url, user="ada", password="s3cret") as basic:
        with contextlib.suppress(StopAsyncIteration):
            await anext(basic.list())
    async with Client(proxy.url, token="tok-123") as bearer:
        with contextlib.suppress(StopAsyncIteration):
            await anext(bearer.list())
    assert proxy.requests_with(b"Authorization: Basic YWRhOnMzY3JldA==")  # ada:s3cret
    assert proxy.requests_with(b"Authorization: Bearer tok-123")


async def test_extra_headers_are_sent_and_the_credentials_win(proxy: Proxy) -> None:
    headers = {"X-Team": "imaging", "Authorization": "Bearer from-headers"}
    async with Client(proxy.url, token="tok-456", headers=headers) as client:
        with contextlib.suppress(StopAsyncIteration):
            await anext(client.list())
    assert proxy.requests_with(b"X-Team: imaging")
    assert proxy.requests_with(b"Authorization: Bearer tok-456")
    assert not proxy.requests_with(b"Authorization: Bearer from-headers")


async def test_events_carry_large_tasks(api: Client) -> None:
    big = {"blob": "x" * 300_000}  # past aiohttp's line limit of 128 KiB
    task_id = await api.submit("echo", big)
    events = await collect(api.events(task_id))
    last = events[-1].task
    assert last is not None and last.status == "success" and last.result_value() == big

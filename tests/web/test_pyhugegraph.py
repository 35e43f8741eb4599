"""The unmodified `hugegraph-python` client (pyhugegraph) against a real `sidetask serve`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession
from pyhugegraph.client import PyHugeClient
from pyhugegraph.utils.exceptions import NotFoundError, ServerError

from tests.conftest import ServerProcess, wait_for

#: what pyhugegraph is given for a server without authentication
USER = PWD = ""


@pytest.fixture
async def server(
    server_factory: Callable[..., ServerProcess], any_db: Path | str
) -> AsyncIterator[ServerProcess]:
    """A real server on each store: HugeGraph's client works against both unchanged."""
    process = server_factory(any_db)
    await process.wait_ready()
    yield process


#: every client a test built, so its sessions are closed after the test
_CLIENTS: list[PyHugeClient] = []


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    yield
    while _CLIENTS:
        _CLIENTS.pop().task().close()


async def connect(
    url: str, graph: str = "hugegraph", graphspace: str | None = None
) -> PyHugeClient:
    # PyHugeClient reads /versions as it is built: a blocking call, so it runs in a thread
    client = await asyncio.wait_for(
        asyncio.to_thread(PyHugeClient, url, graph, USER, PWD, graphspace=graphspace), 20
    )
    _CLIENTS.append(client)
    return client


async def call(function: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.wait_for(asyncio.to_thread(function, *args), 20)


async def submit(http: ClientSession, url: str, job_type: str, body: Any, **query: Any) -> int:
    async with http.post(
        f"{url}/jobs/{job_type}", json=body, params={k: str(v) for k, v in query.items()}
    ) as response:
        assert response.status == 201, await response.text()
        return int((await response.json())["task_id"])


async def wait_until(
    client: PyHugeClient, task_id: int, predicate: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        task: dict[str, Any] = await call(client.task().get_task, task_id)
        return task if predicate(task) else None

    return await wait_for(probe, 30, f"task {task_id} as pyhugegraph reads it")


def not_found_message(error: pytest.ExceptionInfo[NotFoundError]) -> str:
    """pyhugegraph's NotFoundError carries the response body: sidetask's error body."""
    body = orjson.loads(error.value.args[0])
    assert list(body) == ["exception", "message", "cause"]
    return str(body["message"])


async def test_connecting_picks_graphspace_paths_from_versions(server: ServerProcess) -> None:
    client = await connect(server.url)
    assert client.cfg.version == [1, 7, 0]
    assert client.cfg.gs_supported is True
    assert client.cfg.graphspace == "DEFAULT"


async def test_list_get_delete_with_pyhugegraph(server: ServerProcess, http: ClientSession) -> None:
    base = f"{server.url}/graphspaces/DEFAULT/graphs/hugegraph"
    done = await submit(http, base, "echo", {"k": "v"})
    waiting = await submit(http, base, "echo", {}, delay=3600)
    client = await connect(server.url)

    task = await wait_until(client, done, lambda t: t["task_status"] == "success")
    assert task["id"] == done
    assert task["task_type"] == "echo"
    assert task["task_result"] == '{"k":"v"}'

    listed = await call(client.task().list_tasks)
    assert [t["id"] for t in listed["tasks"]] == [done, waiting]
    by_status = await call(client.task().list_tasks, "SUCCESS")
    assert [t["id"] for t in by_status["tasks"]] == [done]
    limited = await call(client.task().list_tasks, None, 1)
    assert [t["id"] for t in limited["tasks"]] == [done]

    assert await call(client.task().delete_task, done) == {}
    with pytest.raises(NotFoundError):
        await call(client.task().get_task, done)
    # pyhugegraph cannot pass force: an incomplete task's delete is refused, and says why
    with pytest.raises(ServerError, match="Please try to cancel the task first"):
        await call(client.task().delete_task, waiting)
    assert [t["id"] for t in (await call(client.task().list_tasks))["tasks"]] == [waiting]


async def test_cancel_with_pyhugegraph(server: ServerProcess, http: ClientSession) -> None:
    base = f"{server.url}/graphspaces/DEFAULT/graphs/hugegraph"
    task_id = await submit(http, base, "sleep", {"steps": 10, "interval": 0.2})
    client = await connect(server.url)
    await wait_until(client, task_id, lambda t: t["task_progress"] >= 1)

    answer = await call(client.task().cancel_task, task_id)
    assert answer["cancelled"] is True
    assert answer["id"] == task_id

    task = await wait_until(client, task_id, lambda t: t["task_status"] == "cancelled")
    assert task["task_progress"] < 10
    with pytest.raises(ServerError, match="which is completed or cancelling"):
        await call(client.task().cancel_task, task_id)


async def test_unknown_task_is_pyhugegraphs_not_found(server: ServerProcess) -> None:
    client = await connect(server.url)
    for method in (client.task().get_task, client.task().delete_task, client.task().cancel_task):
        with pytest.raises(NotFoundError) as error:
            await call(method, 424242)
        assert not_found_message(error) == "Can't find task with id '424242'"


async def test_an_explicit_graphspace_and_graph(server: ServerProcess, http: ClientSession) -> None:
    task_id = await submit(http, f"{server.url}/graphspaces/gs1/graphs/other", "echo", {})
    other = await connect(server.url, graph="other", graphspace="gs1")
    task = await wait_until(other, task_id, lambda t: t["task_status"] == "success")
    assert task["id"] == task_id

    # the task of gs1/other is not found from DEFAULT/hugegraph, nor is an undeclared graph
    default = await connect(server.url)
    with pytest.raises(NotFoundError):
        await call(default.task().get_task, task_id)
    missing = await connect(server.url, graph="nope", graphspace="gs1")
    with pytest.raises(NotFoundError) as error:
        await call(missing.task().list_tasks)
    assert not_found_message(error) == "Graph 'nope' does not exist"

"""The database goes away and comes back, under a replica running a job: `/ready` says so
(503) while `/health` still answers, the job is stopped before the others could start it
again, and once the database is back the replica goes on under a new identity, recovers
the task and runs it to its end. And the database gone just as claimed tasks are handed on:
the hand-on is tried again until it goes through."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import orjson
import pytest
from aiohttp import ClientSession

from tests.conftest import ServerProcess, wait_for
from tests.pg.test_partition import through
from tests.pg.test_replicas import CLAIMED
from tests.pgserver import PgServer
from tests.proxy import Proxy
from tests.sup_jobs import JOBS
from tests.sup_util import rows, trail, wait_file
from tests.web.test_recovery import post_job, wait_task

BASE = "/graphs/hugegraph"


@pytest.fixture
def own_server(pg_server: PgServer) -> Iterator[PgServer]:
    """A PostgreSQL server of this test's own, to stop and start again."""
    with PgServer(pg_server.bindir) as server:
        yield server


async def ready_status(http: ClientSession, server: ServerProcess) -> tuple[int, str]:
    async with http.get(f"{server.url}/ready") as response:
        return response.status, await response.text()


async def test_a_replica_rides_out_a_database_outage(
    own_server: PgServer,
    server_factory: Callable[..., ServerProcess],
    http: ClientSession,
    tmp_path: Path,
) -> None:
    env = {
        "SIDETASK_JOBS": orjson.dumps(JOBS).decode(),
        "SIDETASK_HEARTBEAT_INTERVAL": "0.2",
        "SIDETASK_REPLICA_TIMEOUT": "1.5",
    }
    server = server_factory(db=own_server.dsn, env=env)
    await server.wait_ready()
    began = tmp_path / "began"
    async with http.post(
        f"{server.url}{BASE}/jobs/gate_first_run",
        json={"path": str(tmp_path / "never"), "started": str(began)},
        params={"max_retries": "1"},
    ) as response:
        assert response.status == 201, await response.text()
        task_id = (await response.json())["task_id"]
    await wait_file(began)

    own_server.interrupt()

    async def not_ready() -> str | None:
        status, text = await ready_status(http, server)
        return text if status == 503 else None

    text = await wait_for(not_ready, 15, "/ready to say 503")
    assert "no heartbeat could be written to the database" in text
    async with http.get(f"{server.url}/health") as response:
        assert response.status == 200  # alive, only cut off: not a reason to restart it

    async def abandoned() -> bool:
        return "no heartbeat could be written for" in server.output()

    await wait_for(abandoned, 15, "the job to be stopped")

    own_server.resume()

    async def ready() -> bool:
        return (await ready_status(http, server))[0] == 200

    await wait_for(ready, 20, "/ready to say 200 again")

    async def finished() -> dict[str, object] | None:
        async with http.get(f"{server.url}{BASE}/tasks/{task_id}") as response:
            if response.status != 200:
                return None
            task = dict(await response.json())
            return task if task["task_status"] == "success" else None

    task = await wait_for(finished, 20, "the task to be run again and succeed")
    assert (task["task_retries"], task["task_result"]) == (1, '"run 2"')
    assert "Traceback" not in server.output()


@pytest.fixture
async def proxy(pg_server: PgServer) -> AsyncIterator[Proxy]:
    proxy = Proxy(pg_server.port, record=False)
    await proxy.start()
    yield proxy
    await proxy.close()


def hands_on(chunk: bytes) -> bool:
    """What the writer sends for a claim's hand-on (`scheduling` → `scheduled`): the
    parameters of a status change to `scheduled` (a sweep's, whose statuses include
    `scheduled` too, name `cancelling` beside it)."""
    return b"scheduled" in chunk and b"cancelling" not in chunk


async def test_a_hand_on_the_database_cannot_take_is_tried_again_until_it_can(
    server_factory: Callable[..., ServerProcess],
    http: ClientSession,
    pg_dsn: str,
    proxy: Proxy,
) -> None:
    """The database goes away just as a replica hands claimed tasks on (their claim is
    committed: they are `scheduling`, held by the replica): the hand-on is tried again
    while the process takes work, and once the database is back the tasks go on with
    exactly SPEC 3's steps and run once, without a retry. Left as they were, nobody
    would recover them while the replica lives."""
    server = server_factory(db=through(pg_dsn, proxy.port))
    await server.wait_ready()
    # due in a second: all submitted before the first claim, so no submission meets the
    # outage
    ids = [await post_job(http, server, "echo", {"n": n}, delay=1) for n in range(3)]
    proxy.down_when(hands_on)

    async def down() -> bool:
        return proxy.down

    await wait_for(down, 15, "the database to go away under the hand-on")
    # claimed and not handed on: still `scheduling` (or not claimed yet), nothing lost
    statuses = {status for (status,) in rows(pg_dsn, "SELECT status FROM tasks")}
    assert "scheduling" in statuses and statuses <= {"new", "scheduling"}, statuses
    proxy.heal()

    for task_id in ids:
        done = await wait_task(http, server, task_id, "success", timeout=20)
        assert done["task_retries"] == 0
        assert trail(pg_dsn, task_id) == [*CLAIMED, "running", "success"]
    output = server.output()
    assert "not handed on to scheduled yet, trying again" in output
    assert "Traceback" not in output

"""The database goes away and comes back, under a replica running a job: `/ready` says so
(503) while `/health` still answers, the job is stopped before the others could start it
again, and once the database is back the replica goes on under a new identity, recovers
the task and runs it to its end."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from aiohttp import ClientSession

from tests.conftest import ServerProcess, wait_for
from tests.pgserver import PgServer
from tests.sup_jobs import JOBS
from tests.sup_util import wait_file

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

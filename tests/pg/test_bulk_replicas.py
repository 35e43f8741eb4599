"""A bulk cancel sent to one replica reaches the jobs another runs, as a single cancel
does: two real `sidetask serve` processes on one PostgreSQL database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from aiohttp import ClientSession

from tests.pg.test_replicas import BASE, LIVENESS, Factory
from tests.sup_jobs import JOBS
from tests.sup_util import trail, wait_file
from tests.web.test_recovery import post_job, wait_task

#: the waiting job each replica has (r1 no gate_first_run, r2 no gate), so each runs its
#: own (a replica that took both would hold some queued behind its slots)
RUNS = {"r1": "gate", "r2": "gate_first_run"}


@pytest.fixture
def db(pg_dsn: str) -> str:
    return pg_dsn


async def test_a_bulk_cancel_on_one_replica_stops_the_jobs_both_run(
    server_factory: Factory, http: ClientSession, db: str, tmp_path: Path
) -> None:
    servers = [
        server_factory(
            db=db,
            env={
                "SIDETASK_JOBS": orjson.dumps(
                    {k: v for k, v in JOBS.items() if k == job or k not in RUNS.values()}
                ).decode(),
                "SIDETASK_SERVER_NAME": name,
                **LIVENESS,
            },
        )
        for name, job in RUNS.items()
    ]
    await asyncio.gather(*(server.wait_ready() for server in servers))
    done = await post_job(http, servers[1], "echo", {}, name="nightly done")
    await wait_task(http, servers[0], done, "success")
    running = []
    for n, job in enumerate([*RUNS.values(), *RUNS.values()]):
        body = {"path": str(tmp_path / "never"), "started": str(tmp_path / f"started-{n}")}
        running.append(await post_job(http, servers[n % 2], job, body, name="nightly run"))
    waiting = await post_job(http, servers[1], "echo", {}, name="nightly later", delay=3600)
    tasks = [await wait_task(http, servers[0], t, "running") for t in running]
    await asyncio.gather(*(wait_file(tmp_path / f"started-{n}") for n in range(len(running))))
    assert {t["task_server"] for t in tasks} == {"r1", "r2"}

    async with http.post(
        f"{servers[0].url}{BASE}/tasks/bulk", params={"action": "cancel", "name": "nightly"}
    ) as response:
        assert response.status == 200, await response.text()
        answer = await response.json()
    assert answer["matched"] == len(running) + 2
    assert answer["changed"] == len(running) + 1
    assert answer["refused"] == {"Can't cancel task which is completed or cancelling": 1}

    for task_id in running:
        ended = await wait_task(http, servers[0], task_id, "cancelled")
        assert trail(db, task_id)[-3:] == ["running", "cancelling", "cancelled"], ended
    assert trail(db, waiting)[-1] == "cancelled"

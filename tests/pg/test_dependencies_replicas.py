"""Dependencies across two replicas on one PostgreSQL database (README, "Dependencies"):
a dependant of a task one replica runs is claimed by the other, which alone has its type;
a chain alternates between them; a failure on one ends the dependants the other would run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from aiohttp import ClientSession

from tests.conftest import ServerProcess
from tests.sup_jobs import JOBS
from tests.web.test_recovery import get, post_job, wait_task

Factory = Callable[..., ServerProcess]


@pytest.fixture
def db(pg_dsn: str) -> str:
    return pg_dsn


async def test_a_dependant_is_claimed_by_the_other_replica(
    server_factory: Factory, http: ClientSession, db: str, tmp_path: Path
) -> None:
    # r1 has the helper jobs, r2 only `results`: each type runs on one replica alone
    jobs = (JOBS, {"results": "tests.dep_jobs:results"})
    servers = [
        server_factory(
            db=db,
            env={"SIDETASK_JOBS": orjson.dumps(j).decode(), "SIDETASK_SERVER_NAME": f"r{n}"},
        )
        for n, j in enumerate(jobs, start=1)
    ]
    await asyncio.gather(*(server.wait_ready() for server in servers))
    one, two = servers
    gate = tmp_path / "gate"
    head = await post_job(http, one, "gate", {"path": str(gate), "result": "h"})
    chain = [head]
    for n in range(6):  # results on r2, gates (open) on r1, in turn
        if n % 2 == 0:
            chain.append(await post_job(http, two, "results", {"value": n}, dependencies=chain[-1]))
        else:
            chain.append(
                await post_job(
                    http, one, "gate", {"path": str(gate), "result": n}, dependencies=chain[-1]
                )
            )
    assert (await get(http, one, chain[1]))["task_dependencies_left"] == 1
    gate.touch()
    for task_id in chain:
        await wait_task(http, one, task_id, "success", timeout=30)
    for n, task_id in enumerate(chain):
        task = await get(http, two, task_id)
        assert task["task_server"] == ("r1" if n % 2 == 0 else "r2"), task
    last = orjson.loads((await get(http, one, chain[1]))["task_result"])
    assert last == {"value": 0, "dependencies": {str(head): "h"}}

    # a failure on r1 ends the dependant only r2 could run, and its own dependant
    failed = await post_job(http, one, "fail", {"message": "no"})
    below = await post_job(http, two, "results", {}, dependencies=failed)
    further = await post_job(http, two, "results", {}, dependencies=below)
    ended = await wait_task(http, two, further, "failed", timeout=30)
    assert ended["task_result"] == f"Failed due to dependent task '{below}' failed"
    assert (await get(http, one, below))["task_result"] == (
        f"Failed due to dependent task '{failed}' failed"
    )

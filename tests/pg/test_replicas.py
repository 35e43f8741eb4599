"""Several replicas on one PostgreSQL database: three real `sidetask serve` processes share
its work. Submissions to any of them, every task run once; every event of every replica
on every replica's stream in id order, resumable on another; a cancel sent to one for a
job another runs; a replica killed mid-run and its task finished by the others."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession

from tests.conftest import ServerProcess, wait_for
from tests.sup_jobs import JOBS
from tests.sup_util import rows, trail, wait_file
from tests.web.test_recovery import get, post_job, wait_task

BASE = "/graphs/hugegraph"
Factory = Callable[..., ServerProcess]
#: a task's steps to a slot on a replica (SPEC 3): claimed, handed on, confirmed
CLAIMED = ["new", "scheduling", "scheduled", "queued"]
#: quick heartbeats, so a killed replica is declared dead within a couple of seconds
LIVENESS = {"SIDETASK_HEARTBEAT_INTERVAL": "0.2", "SIDETASK_REPLICA_TIMEOUT": "1.5"}


async def replicas(
    factory: Factory, db: str, count: int = 3, liveness: dict[str, str] = LIVENESS
) -> list[ServerProcess]:
    started = [
        factory(
            db=db,
            env={"SIDETASK_JOBS": orjson.dumps(JOBS).decode(), "SIDETASK_SERVER_NAME": f"r{n}"}
            | liveness,
        )
        for n in range(1, count + 1)
    ]
    await asyncio.gather(*(server.wait_ready() for server in started))
    return started


async def stream(
    http: ClientSession, server: ServerProcess, last_event_id: int = 0
) -> AsyncIterator[tuple[int, str, dict[str, Any]]]:
    """The graph's event stream from a replica: (id, event, data) as they come."""
    headers = {"Last-Event-ID": str(last_event_id)}
    async with http.get(f"{server.url}{BASE}/events", headers=headers) as response:
        assert response.status == 200, await response.text()
        event_id, name = 0, ""
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                yield event_id, name, orjson.loads(line[6:])


async def read_until(
    source: AsyncIterator[tuple[int, str, dict[str, Any]]],
    done: Callable[[list[tuple[int, str, dict[str, Any]]]], bool],
    timeout: float = 30,
) -> list[tuple[int, str, dict[str, Any]]]:
    seen: list[tuple[int, str, dict[str, Any]]] = []

    async def read() -> None:
        async for item in source:
            seen.append(item)
            if done(seen):
                return

    await asyncio.wait_for(read(), timeout)
    return seen


def successes(seen: list[tuple[int, str, dict[str, Any]]]) -> set[int]:
    return {data["id"] for _, _, data in seen if data.get("task_status") == "success"}


async def a_run_that_never_ends(
    http: ClientSession, servers: list[ServerProcess], tmp_path: Path
) -> tuple[int, ServerProcess]:
    """A task whose first run waits forever (a retry returns at once), running on one of
    the replicas: its id, and that replica."""
    began = tmp_path / "began"
    task_id = await post_job(
        http,
        servers[0],
        "gate_first_run",
        {"path": str(tmp_path / "never"), "started": str(began)},
        max_retries=1,
    )
    task = await wait_task(http, servers[0], task_id, "running")
    await wait_file(began)
    runner = next(s for s in servers if s.env["SIDETASK_SERVER_NAME"] == task["task_server"])
    return task_id, runner


@pytest.fixture
def db(pg_dsn: str) -> str:
    return pg_dsn


async def test_submissions_to_every_replica_run_each_task_once(
    server_factory: Factory, http: ClientSession, db: str
) -> None:
    servers = await replicas(server_factory, db)
    ids = [await post_job(http, servers[n % 3], "echo", {"n": n}) for n in range(60)]
    assert ids == sorted(ids) and len(set(ids)) == 60  # positive, unique, increasing
    for task_id in ids:
        await wait_task(http, servers[task_id % 3], task_id, "success")
    for task_id in ids:
        # one claim, one run: exactly these steps (SPEC 3, several replicas), whoever ran it
        assert trail(db, task_id) == [*CLAIMED, "running", "success"]
    ran_on = {server for (server,) in rows(db, "SELECT server FROM tasks")}
    assert ran_on <= {"r1", "r2", "r3"} and len(ran_on) >= 2  # the work was shared
    # every replica answers every read
    for server in servers:
        assert (await get(http, server, ids[-1]))["task_status"] == "success"


async def test_each_transition_is_logged_once_by_the_replica_that_made_it(
    server_factory: Factory, http: ClientSession, db: str
) -> None:
    """Every replica sees every replica's events; its log holds the lines of its own
    changes only, so the cluster's logs hold each transition once."""
    servers = await replicas(server_factory, db, count=2)
    posted = {await post_job(http, servers[n % 2], "echo", {"n": n}): n % 2 for n in range(20)}
    done = {task_id: await wait_task(http, servers[0], task_id, "success") for task_id in posted}
    by_name = {"r1": 0, "r2": 1}

    def lines(what: str, task_id: int) -> list[int]:
        """The replicas (their index) whose log says `task <id> <what>`."""
        line = f"task {task_id} {what} ("
        return [n for n, server in enumerate(servers) for _ in range(server.output().count(line))]

    async def logged() -> bool:
        return all(lines("success", task_id) for task_id in posted)

    await wait_for(logged, 10, "every task's last line")
    for task_id, n in posted.items():
        assert lines("created", task_id) == [n]  # by the replica it was submitted to
        ran = by_name[done[task_id]["task_server"]]
        for status in ("scheduling", "running", "success"):
            assert lines(status, task_id) == [ran], (task_id, status)


async def test_every_replica_streams_every_event_in_id_order_and_resumes_on_another(
    server_factory: Factory, http: ClientSession, db: str
) -> None:
    servers = await replicas(server_factory, db)
    watcher = stream(http, servers[2])
    first = asyncio.ensure_future(
        read_until(watcher, lambda seen: len(successes(seen)) >= 10)  # type: ignore[arg-type]
    )
    ids = [await post_job(http, servers[n % 2], "echo", {"n": n}) for n in range(10)]
    seen = await first
    await watcher.aclose()
    stored = [
        (event_id, task_id)
        for event_id, task_id in rows(
            db, "SELECT id, task_id FROM events WHERE id <= ? ORDER BY id", (seen[-1][0],)
        )
    ]
    # what the stream of the third replica showed is exactly what is stored: no gap, no
    # repeat, in id order, though the events were written by the other two
    assert [(event_id, data["id"]) for event_id, _, data in seen] == stored
    assert set(ids) == successes(seen)

    # resumed on another replica after an event in the middle: the rest, once each
    middle = seen[len(seen) // 2][0]
    more = [await post_job(http, servers[0], "echo", {"m": n}) for n in range(3)]
    resumed = await read_until(
        stream(http, servers[1], middle), lambda s: successes(s) >= set(more)
    )
    expected = [
        event_id
        for (event_id,) in rows(
            db,
            "SELECT id FROM events WHERE id > ? AND id <= ? ORDER BY id",
            (middle, resumed[-1][0]),
        )
    ]
    assert [event_id for event_id, _, _ in resumed] == expected


async def test_a_cancel_sent_to_one_replica_stops_the_job_another_runs(
    server_factory: Factory, http: ClientSession, db: str, tmp_path: Path
) -> None:
    servers = await replicas(server_factory, db)
    seen = tmp_path / "cancel-seen"
    task_id = await post_job(
        http, servers[0], "gate", {"path": str(tmp_path / "never"), "started": str(seen)}
    )
    task = await wait_task(http, servers[0], task_id, "running")
    await wait_file(seen)
    runner = next(s for s in servers if s.env["SIDETASK_SERVER_NAME"] == task["task_server"])
    other = next(s for s in servers if s is not runner)
    async with http.put(
        f"{other.url}{BASE}/tasks/{task_id}", params={"action": "cancel"}
    ) as response:
        assert response.status == 202, await response.text()
        # `cancelling`; or already `cancelled`, when the replica running it saw the event and
        # its job ended before this answer was made
        assert (await response.json())["task_status"] in ("cancelling", "cancelled")
    # the replica running it got the event and interrupted its job, which ends cancelled
    done = await wait_task(http, other, task_id, "cancelled")
    assert done["task_server"] == runner.env["SIDETASK_SERVER_NAME"]
    assert trail(db, task_id)[-3:] == ["running", "cancelling", "cancelled"]


async def test_a_killed_replicas_task_is_finished_by_the_others(
    server_factory: Factory, http: ClientSession, db: str, tmp_path: Path
) -> None:
    servers = await replicas(server_factory, db)
    task_id, runner = await a_run_that_never_ends(http, servers, tmp_path)
    runner.kill()
    assert runner.proc.returncode == -signal.SIGKILL
    survivor = next(s for s in servers if s is not runner)
    # noticed (its session's life lock is gone at once; its heartbeat within 1.5 s) and
    # recovered as a restart recovers: the retry runs on a survivor
    done = await wait_task(http, survivor, task_id, "success")
    assert done["task_retries"] == 1 and done["task_result"] == '"run 2"'
    assert done["task_server"] != runner.env["SIDETASK_SERVER_NAME"]
    assert (
        trail(db, task_id)
        == [
            *CLAIMED,
            "running",  # on the killed replica
            "restoring",
            *CLAIMED[1:],
            "running",
            "success",
        ]
    )


async def test_a_replica_that_stops_hands_back_the_job_it_gave_up_on_at_once(
    server_factory: Factory, http: ClientSession, db: str, tmp_path: Path
) -> None:
    """drain_grace is 2 s (config/test.toml): past it, the job that never ends is given up,
    and its task is recovered by the stopping replica itself before it exits. (Sweeps a
    minute apart: no other replica's sweep could have done it in the meantime.)"""
    slow = {"SIDETASK_HEARTBEAT_INTERVAL": "60", "SIDETASK_REPLICA_TIMEOUT": "120"}
    servers = await replicas(server_factory, db, count=2, liveness=slow)
    task_id, runner = await a_run_that_never_ends(http, servers, tmp_path)
    runner.proc.send_signal(signal.SIGTERM)
    assert runner.proc.wait(30) == 0
    # at its exit the task is no longer held by it: restored (and maybe claimed already)
    ((status, retries),) = rows(db, "SELECT status, retries FROM tasks WHERE id = ?", (task_id,))
    assert (status, retries) != ("running", 0)
    assert "handed back the tasks left running: 1 restoring" in runner.output()
    survivor = next(s for s in servers if s is not runner)
    done = await wait_task(http, survivor, task_id, "success")
    assert (done["task_retries"], done["task_result"]) == (1, '"run 2"')


async def test_an_external_worker_claims_from_one_replica_and_reports_to_another(
    server_factory: Factory, http: ClientSession, db: str
) -> None:
    servers = await replicas(
        server_factory, db, count=2, liveness={**LIVENESS, "SIDETASK_EXTERNAL_TYPES": "resize"}
    )
    first, second = servers
    # a claim waiting on the first replica is woken by a submission to the second
    claiming = asyncio.ensure_future(
        http.post(f"{first.url}/workers/w1/claim", params={"wait": "15", "types": "resize"})
    )
    task_id = await post_job(http, second, "resize", {"image": "cat.png"})
    response = await asyncio.wait_for(claiming, 20)
    assert response.status == 200, await response.text()
    work = await response.json()
    assert work["id"] == task_id
    lease = {"X-Lease": work["lease"]}
    async with http.put(
        f"{second.url}{work['task_url']}/progress", json={"progress": 40}, headers=lease
    ) as answer:
        assert answer.status == 200, await answer.text()
        assert (await answer.json())["task_status"] == "running"
    async with http.post(
        f"{first.url}{work['task_url']}/complete", json={"result": "done"}, headers=lease
    ) as answer:
        assert answer.status == 200, await answer.text()
    assert (await get(http, second, task_id))["task_status"] == "success"
    assert trail(db, task_id) == ["new", "scheduled", "running", "success"]

"""A network partition between a replica and PostgreSQL, while the replica runs a long job:
its connections go through a proxy that goes silent (nothing passes either way, no end is
told), while another replica is connected directly.

The survivor declares the silent replica dead once its heartbeat is older than
replica_timeout, recovers its task and runs it to its end; the cut-off replica stops its
job first (after 80% of the timeout without a heartbeat) and answers /ready with 503; when
the network heals it comes back under a new identity, and nothing it writes reaches the
task it lost (the fence). The partition comes at any moment, or in the middle of one of the
replica's transactions (the writer's next: a sweep, which holds the sweep lock): PostgreSQL
then holds that transaction open, with what it locked, until it ends the silent session
(after replica_timeout), so the survivor is held up until then, not for good. A session
holding the events lock so (cut off between a transaction's events and its commit) holds
up every other replica's writes, not their heartbeats: the last test."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import ClientSession
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServerProcess, wait_for
from tests.pg.test_replicas import CLAIMED
from tests.pgserver import PgServer
from tests.proxy import Proxy
from tests.sup_jobs import JOBS
from tests.sup_util import rows, trail
from tests.web.test_recovery import post_job, wait_task

Factory = Callable[..., ServerProcess]
#: heartbeats every 0.2 s, declared dead after 3 s: the cut-off replica gives up its jobs
#: after 2.4 s of silence, before the others may take them
LIVENESS = {"SIDETASK_HEARTBEAT_INTERVAL": "0.2", "SIDETASK_REPLICA_TIMEOUT": "3"}


@pytest.fixture
async def proxy(pg_server: PgServer) -> AsyncIterator[Proxy]:
    proxy = Proxy(pg_server.port, record=False)
    await proxy.start()
    yield proxy
    await proxy.close()


def through(dsn: str, port: int) -> str:
    """The DSN with the proxy's port in place of the server's."""
    parts = urllib.parse.urlsplit(dsn)
    netloc = f"{parts.netloc.rsplit('@', 1)[0]}@127.0.0.1:{port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def replica(factory: Factory, db: str, name: str) -> ServerProcess:
    jobs = JOBS | {
        "record": "tests.pg.partition_jobs:first_run_held",
        "reports": "tests.pg.partition_jobs:reports_until_gate",
    }
    env = {"SIDETASK_JOBS": orjson.dumps(jobs).decode(), "SIDETASK_SERVER_NAME": name}
    return factory(db=db, env=env | LIVENESS)


async def ready_status(http: ClientSession, server: ServerProcess) -> int:
    async with http.get(f"{server.url}/ready") as response:
        return response.status


async def identity(http: ClientSession, server: ServerProcess) -> str:
    """The replica's identity in the database, as its /metrics names it."""
    async with http.get(f"{server.url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "sidetask_replica_info":
                return str(sample.labels["replica"])
    raise AssertionError(f"no sidetask_replica_info in {text}")


def runs(record: Path) -> list[tuple[str, int, int]]:
    """The record's lines: (what, pid, retries)."""
    lines = record.read_text().splitlines() if record.exists() else []
    return [(what, int(pid), int(retries)) for what, _, pid, retries in map(str.split, lines)]


def events_of(db: str, task_id: int) -> list[tuple[str, str | None, dict[str, Any]]]:
    return [
        (kind, status, orjson.loads(bytes(data)))
        for kind, status, data in rows(
            db, "SELECT kind, status, data FROM events WHERE task_id = ? ORDER BY id", (task_id,)
        )
    ]


@pytest.mark.parametrize("in_transaction", [False, True], ids=["anywhere", "in-transaction"])
async def test_a_replica_partitioned_from_the_database_is_replaced_and_fenced(
    server_factory: Factory,
    http: ClientSession,
    pg_dsn: str,
    proxy: Proxy,
    tmp_path: Path,
    in_transaction: bool,
) -> None:
    record = tmp_path / "record"
    cut = replica(server_factory, through(pg_dsn, proxy.port), "cut")
    await cut.wait_ready()
    old_identity = await identity(http, cut)
    # the only replica yet: it runs the task, whose first run goes on until it is stopped
    task_id = await post_job(http, cut, "record", {"record": str(record)}, max_retries=1)
    await wait_task(http, cut, task_id, "running")

    async def began() -> bool:
        return bool(runs(record))

    await wait_for(began, 10, "the run to start")
    direct = replica(server_factory, pg_dsn, "direct")
    await direct.wait_ready()

    proxy.partition(in_transaction)

    async def partitioned() -> bool:
        return proxy.partitioned

    await wait_for(partitioned, 10, "the partition")  # the next transaction, at the latest

    # the survivor: the silent replica's heartbeat grows old, it is declared dead, and its
    # task recovered (a retry: one is left) and run to its end here
    done = await wait_task(http, direct, task_id, "success", timeout=60)
    assert (done["task_server"], done["task_retries"]) == ("direct", 1)
    assert "recovered the tasks of a process declared dead: 1 restoring" in direct.output()

    # the cut-off replica stopped its job, says it is not ready, and lives on
    async def gave_up() -> bool:
        return "no heartbeat could be written for" in cut.output()

    await wait_for(gave_up, 10, "the cut-off replica to stop its job")
    assert await ready_status(http, cut) == 503
    async with http.get(f"{cut.url}/health") as response:
        assert response.status == 200
    # one run stopped on the cut-off replica before the survivor's began: never two at once
    lines = runs(record)
    assert [(what, retries) for what, _, retries in lines] == [
        ("start", 0),
        ("stop", 0),
        ("start", 1),
        ("end", 1),
    ], lines
    assert lines[0][1] == lines[1][1] == cut.proc.pid
    assert lines[2][1] == lines[3][1] == direct.proc.pid

    proxy.heal()

    # back, under a new identity; the old one is gone from the replicas
    async def ready_again() -> bool:
        return await ready_status(http, cut) == 200

    await wait_for(ready_again, 20, "the healed replica to be ready")
    new_identity = await identity(http, cut)
    assert new_identity != old_identity
    live = {str(replica) for (replica,) in rows(pg_dsn, "SELECT id FROM replicas")}
    assert new_identity in live and old_identity not in live

    # the fence: from the recovery on, every change of the task is the survivor's; the old
    # owner's writes queued during the partition were refused once they reached the database
    # (its writer runs them in order, before the heartbeat that made it ready again)
    assert (
        trail(pg_dsn, task_id)
        == [
            *CLAIMED,
            "running",  # on the cut-off replica
            "restoring",  # the survivor's recovery
            *CLAIMED[1:],
            "running",
            "success",
        ]
    )
    events = events_of(pg_dsn, task_id)
    recovery = next(i for i, (_, status, _) in enumerate(events) if status == "restoring")
    assert {data["task_server"] for _, _, data in events[recovery + 1 :]} == {"direct"}
    assert (
        events[-1][1] == "success"
        and events[-1][2]["task_result"] == orjson.dumps({"pid": direct.proc.pid}).decode()
    )
    assert len(runs(record)) == 4  # nothing ran again
    assert "Traceback" not in cut.output() + direct.output()


async def test_a_replica_cut_off_mid_commit_holds_the_others_up_without_stopping_them(
    server_factory: Factory, http: ClientSession, pg_dsn: str, tmp_path: Path
) -> None:
    """A replica cut off after its transaction's events were appended and before its commit
    leaves a silent session holding the events lock (a test's session here, set as a
    replica's writer is): every other replica's event-writing transaction waits for it.
    Their heartbeats do not: a replica held up so keeps its jobs and stays ready, and
    PostgreSQL ends the silent session after replica_timeout, letting its writes go on."""
    record, gate = tmp_path / "record", tmp_path / "gate"
    server = replica(server_factory, pg_dsn, "held-up")
    await server.wait_ready()
    task_id = await post_job(http, server, "reports", {"record": str(record), "gate": str(gate)})
    await wait_task(http, server, task_id, "running")

    silent = await asyncpg.connect(pg_dsn, server_settings={"search_path": "sidetask"})
    try:
        await silent.execute(
            "SELECT set_config('idle_in_transaction_session_timeout', $1, false)",
            str(int(float(LIVENESS["SIDETASK_REPLICA_TIMEOUT"]) * 1000)),
        )
        pid = silent.get_server_pid()
        await silent.execute("BEGIN")
        await silent.execute(
            "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.events'))"
        )

        async def waiting() -> bool:  # the replica's progress writes wait for the lock
            found = rows(
                pg_dsn,
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> ?",
                (pid,),
            )
            return bool(found[0][0])

        await wait_for(waiting, 10, "the replica's writes to wait for the events lock")

        async def ended() -> bool:  # PostgreSQL ends the silent session
            found = rows(pg_dsn, "SELECT count(*) FROM pg_stat_activity WHERE pid = ?", (pid,))
            return not found[0][0]

        await wait_for(ended, 20, "the silent session to be ended")
    finally:
        silent.terminate()

    before = rows(pg_dsn, "SELECT progress FROM tasks WHERE id = ?", (task_id,))[0][0]

    async def reported() -> bool:  # its writes go on
        progress = rows(pg_dsn, "SELECT progress FROM tasks WHERE id = ?", (task_id,))[0][0]
        return bool(progress > before)

    await wait_for(reported, 10, "the progress to be written again")
    gate.touch()
    done = await wait_task(http, server, task_id, "success")
    # held up, never cut off: its job went on to its end, its first run
    assert done["task_retries"] == 0
    assert [what for what, _, _ in runs(record)] == ["start", "end"]
    assert await ready_status(http, server) == 200
    assert "no heartbeat could be written" not in server.output()

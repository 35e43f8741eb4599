"""A job type paused through one replica is paused on every replica of the PostgreSQL
database: none claims a task of it, and one that had already taken a task of it (waiting
for a slot) hands it back instead of starting it; resumed through another, it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from service.web import create_app
from tests.conftest import get_task, make_settings, submit, wait_for, wait_status
from tests.sup_jobs import JOBS
from tests.sup_util import wait_file
from tests.web.test_paused_types import set_type

BASE = "/graphs/hugegraph"


async def replica(aiohttp_client: Any, tmp_path: Path, pg_dsn: str, name: str) -> TestClient:
    settings = make_settings(tmp_path / name, pg_dsn, jobs=JOBS, concurrency=1, server_name=name)
    return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]


async def test_a_type_paused_on_one_replica_is_paused_on_all(
    aiohttp_client: Any, tmp_path: Path, pg_dsn: str
) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    a = await replica(aiohttp_client, tmp_path, pg_dsn, "a")
    b = await replica(aiohttp_client, tmp_path, pg_dsn, "b")
    paused = await set_type(a, "sleep", "pause")
    # read from the database by the other replica at once
    assert (await (await b.get("/types")).json())["paused"] == {"sleep": paused["paused_since"]}
    waiting = await submit(b, BASE, "sleep", {"steps": 1, "interval": 0})
    for client in (a, b):  # both replicas claim other work past it
        other = await submit(client, BASE, "echo", {})
        await wait_status(client, BASE, other, "success")
    assert (await get_task(a, BASE, waiting))["task_status"] == "new"
    await set_type(b, "sleep", "resume")
    await wait_status(a, BASE, waiting, "success")


async def test_a_task_already_taken_by_a_replica_is_handed_back_when_paused(
    aiohttp_client: Any, tmp_path: Path, pg_dsn: str
) -> None:
    """Replica a runs one gate in its only slot and has taken the next (queued, waiting for
    the slot); pausing the type through b makes a give that one back."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = await replica(aiohttp_client, tmp_path, pg_dsn, "a")
    started, release = tmp_path / "started", tmp_path / "release"
    first = await submit(a, BASE, "gate", {"started": str(started), "path": str(release)})
    await wait_file(started)
    second = await submit(a, BASE, "gate", {"path": str(release)})
    await wait_status(a, BASE, second, "queued")  # a took it: it waits for a's slot
    b = await replica(aiohttp_client, tmp_path, pg_dsn, "b")
    await set_type(b, "gate", "pause")

    async def handed_back() -> bool:
        return (await get_task(a, BASE, second))["task_status"] == "restoring"

    await wait_for(handed_back, 10, "replica a to hand the queued gate back")
    release.touch()
    await wait_status(a, BASE, first, "success")  # the running one finishes
    for client in (a, b):
        other = await submit(client, BASE, "echo", {})
        await wait_status(client, BASE, other, "success")
    assert (await get_task(a, BASE, second))["task_status"] == "restoring"
    await set_type(a, "gate", "resume")
    await wait_status(b, BASE, second, "success")

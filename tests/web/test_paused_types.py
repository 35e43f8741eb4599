"""Pausing a whole job type, on both stores: nothing new of it starts (in-process, or
through an external worker's claim) while its running jobs finish; it shows in GET /types,
the metrics, the client and the command; the pause is held in the store, so on PostgreSQL
every replica obeys it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from service.client import Client
from service.web import create_app
from service.web.keys import LEASE_HUB
from tests.conftest import get_task, make_settings, submit, wait_for, wait_status
from tests.sup_jobs import JOBS
from tests.sup_util import wait_file
from tests.web.test_cli import sidetask

BASE = "/graphs/hugegraph"


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path, any_db: Path | str) -> TestClient:
    settings = make_settings(tmp_path, any_db, jobs=JOBS, external_types=("resize",))
    return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]


async def set_type(client: TestClient, type_name: str, action: str) -> dict[str, Any]:
    response = await client.put(f"/types/{type_name}", params={"action": action})
    assert response.status == 200, await response.text()
    return dict(await response.json())


async def test_a_paused_type_starts_nothing_until_resumed(client: TestClient) -> None:
    paused = await set_type(client, "sleep", "pause")
    assert paused["type"] == "sleep" and paused["paused"] is True
    assert isinstance(paused["paused_since"], int)
    again = await set_type(client, "sleep", "pause")  # pausing again keeps the first time
    assert again["paused_since"] == paused["paused_since"]
    listed = await (await client.get("/types")).json()
    assert listed["paused"] == {"sleep": paused["paused_since"]}
    assert "sleep" in listed["types"]

    waiting = await submit(client, BASE, "sleep", {"steps": 1, "interval": 0})
    # another type runs meanwhile: the scheduler claimed past the paused one
    other = await submit(client, BASE, "echo", {"a": 1})
    await wait_status(client, BASE, other, "success")
    assert (await get_task(client, BASE, waiting))["task_status"] == "new"

    resumed = await set_type(client, "sleep", "resume")
    assert resumed == {"type": "sleep", "paused": False, "paused_since": None}
    await wait_status(client, BASE, waiting, "success")
    assert (await (await client.get("/types")).json())["paused"] == {}


async def test_running_jobs_of_a_paused_type_finish(client: TestClient, tmp_path: Path) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    running = await submit(
        client, BASE, "gate", {"started": str(started), "path": str(release), "result": "ok"}
    )
    await wait_file(started)
    await set_type(client, "gate", "pause")
    behind = await submit(client, BASE, "gate", {"path": str(release)})
    release.touch()
    task = await wait_status(client, BASE, running, "success")
    assert task["task_result"] == '"ok"'
    other = await submit(client, BASE, "echo", {})
    await wait_status(client, BASE, other, "success")
    assert (await get_task(client, BASE, behind))["task_status"] == "new"
    await set_type(client, "gate", "resume")
    await wait_status(client, BASE, behind, "success")


async def test_a_paused_external_type_is_not_handed_to_workers(client: TestClient) -> None:
    task_id = await submit(client, BASE, "resize", {})
    await set_type(client, "resize", "pause")
    response = await client.post("/workers/w1/claim", params={"wait": "0"})
    assert response.status == 204
    # a claim waiting when the type is resumed gets the task at once
    waiting = asyncio.ensure_future(client.post("/workers/w1/claim", params={"wait": "60"}))

    async def claim_waits() -> bool:
        return client.app[LEASE_HUB].waiting == 1

    await wait_for(claim_waits, 10, "the claim to wait for work")
    await set_type(client, "resize", "resume")
    response = await asyncio.wait_for(waiting, 10)
    assert response.status == 200
    assert (await response.json())["id"] == task_id


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/types/nope?action=pause", 404, "Job type 'nope' is not registered; registered types:"),
        ("/types/sleep?action=stop", 400, "Not support action 'stop' on a job type; one of pause, resume"),
        ("/types/sleep", 400, "Not support action '' on a job type"),
    ],
)  # fmt: skip
async def test_a_bad_type_or_action_says_what_is_wrong(
    client: TestClient, path: str, status: int, message: str
) -> None:
    response = await client.put(path)
    assert response.status == status
    body = await response.json()
    assert body["message"].startswith(message)
    assert set(body) == {"exception", "message", "cause"}


async def test_the_metrics_show_the_paused_types(client: TestClient) -> None:
    await set_type(client, "echo", "pause")
    text = await (await client.get("/metrics")).text()
    assert 'sidetask_type_paused{type="echo"} 1.0' in text
    assert 'sidetask_type_paused{type="sleep"} 0.0' in text


# --- the client and the command, against a real server on loopback ---


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[str]:
    server = TestServer(create_app(make_settings(tmp_path)), host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


async def test_the_client_and_the_command_pause_and_resume_a_type(served: str) -> None:
    async with Client(served) as api:
        answer = await asyncio.wait_for(api.pause_type("sleep"), 10)
        assert answer["paused"] is True
        assert (await api.job_types())["paused"] == {"sleep": answer["paused_since"]}
        ran = await sidetask("types", "--url", served)
        assert ran.code == 0, ran.err
        assert any(line.split()[:2] == ["sleep", "paused"] for line in ran.out.splitlines())
        ran = await sidetask("types", "resume", "sleep", "--url", served)
        assert ran.code == 0 and "Job type sleep runs again." in ran.out, ran.err
        ran = await sidetask("types", "pause", "echo", "--url", served, "--json")
        assert ran.code == 0 and ran.json()["paused"] is True
        assert set((await api.job_types())["paused"]) == {"echo"}
        ran = await sidetask("types", "pause", "nope", "--url", served)
        assert ran.code == 3 and "Job type 'nope' is not registered" in ran.err

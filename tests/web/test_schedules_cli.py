"""Schedules and run_at through the Python client and the `sidetask` command (run for real,
in a subprocess) against a real server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiohttp.test_utils import TestServer

from service.client import APIError, Client
from tests.web.test_cli import sidetask, submitted_id


@pytest.fixture
def url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def api(url: str) -> AsyncIterator[Client]:
    async with Client(url) as api:
        yield api


async def test_the_client_makes_lists_pauses_resumes_and_deletes_schedules(api: Client) -> None:
    made = await api.create_schedule(
        "nightly", "echo", {"report": 1}, cron="0 3 * * *", timezone="Europe/Paris", missed="skip"
    )
    assert made.cron == "0 3 * * *" and made.timezone == "Europe/Paris"
    assert made.when == "cron '0 3 * * *' (Europe/Paris)"
    assert made.next_fire_ms is not None and made.next_fire_ms > time.time() * 1000
    tick = await api.create_schedule("tick", "echo", every=3600, paused=True)
    assert tick.paused and tick.next_fire_ms is None
    assert [s.name for s in await api.schedules()] == ["nightly", "tick"]
    resumed = await api.resume_schedule("tick")
    assert not resumed.paused and resumed.next_fire_ms is not None
    assert (await api.pause_schedule("tick")).paused
    await api.delete_schedule("tick")
    with pytest.raises(APIError) as refused:
        await api.schedule("tick")
    assert refused.value.status == 404
    with pytest.raises(APIError) as bad:
        await api.create_schedule("bad", "echo", cron="not cron")
    assert bad.value.status == 400 and "is not a cron expression" in bad.value.message


async def test_the_client_submits_with_run_at_and_reads_the_due_time(api: Client) -> None:
    ahead = datetime.fromtimestamp(int(time.time()) + 3600, UTC)
    task = await api.get(await api.submit("echo", {}, run_at=ahead))
    assert task.run_at_ms == int(ahead.timestamp()) * 1000
    with pytest.raises(ValueError, match="time zone"):
        await api.submit("echo", {}, run_at=datetime(2030, 1, 1))


async def test_the_command_manages_schedules(url: str, api: Client) -> None:
    ran = await sidetask(
        "schedules", "add", "nightly", "echo", "--cron", "30 3 * * *", "--timezone", "UTC",
        "--input", '{"a": 1}', "--url", url,
    )  # fmt: skip
    assert ran.code == 0, ran.err
    assert "next_fire" in ran.out and "30 3 * * *" in ran.out
    listed = await sidetask("schedules", "--url", url)
    assert listed.code == 0, listed.err
    assert "nightly" in listed.out and "NEXT FIRE" in listed.out
    as_json = await sidetask("schedules", "list", "--json", "--url", url)
    [schedule] = as_json.json()
    assert schedule["name"] == "nightly" and schedule["input"] == {"a": 1}
    paused = await sidetask("schedules", "pause", "nightly", "--json", "--url", url)
    assert paused.json()["paused"] is True
    assert "paused" in (await sidetask("schedules", "--url", url)).out
    resumed = await sidetask("schedules", "resume", "nightly", "--json", "--url", url)
    assert resumed.json()["next_fire"] is not None
    bad = await sidetask("schedules", "add", "x", "echo", "--every", "0.1", "--url", url)
    assert bad.code != 0 and "'every' must be between 1" in bad.err
    gone = await sidetask("schedules", "delete", "nightly", "--url", url)
    assert gone.code == 0, gone.err
    missing = await sidetask("schedules", "get", "nightly", "--url", url)
    assert missing.code != 0 and "Can't find schedule with name 'nightly'" in missing.err


async def test_the_command_submits_with_run_at_and_shows_when_it_is_due(
    url: str, api: Client
) -> None:
    ahead = int(time.time()) + 3600
    ran = await sidetask("submit", "echo", "--run-at", str(ahead * 1000), "--url", url)
    task_id = submitted_id(ran)
    assert (await api.get(task_id)).run_at_ms == ahead * 1000
    iso = datetime.fromtimestamp(ahead, UTC).isoformat()
    again = submitted_id(await sidetask("submit", "echo", "--run-at", iso, "--url", url))
    assert (await api.get(again)).run_at_ms == ahead * 1000
    due = datetime.fromtimestamp(ahead).strftime("%Y-%m-%d %H:%M:%S")
    listed = await sidetask("ls", "--url", url, env={"COLUMNS": "200"})
    assert "DUE" in listed.out and due in listed.out
    shown = await sidetask("get", str(task_id), "--url", url)
    assert f"{due} ({ahead * 1000})" in shown.out
    both = await sidetask("submit", "echo", "--delay", "5", "--run-at", iso, "--url", url)
    assert both.code != 0 and "not allowed with argument" in both.err

"""`task_run_at`: when a task waiting for its delay or a retry's backoff becomes due, after
HugeGraph's eleven keys, on the task while it waits and on no other."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import BASES, get_task, submit, wait_status
from tests.sup_util import Start
from tests.web.test_tasks_api import assert_task_keys


@pytest.fixture
def db(any_db: Path | str) -> Path | str:
    """Every test here runs on both stores."""
    return any_db


BASE = BASES[0]


async def test_a_delayed_task_says_when_it_is_due(client: TestClient) -> None:
    task_id = await submit(client, BASE, "echo", {}, delay=3600)
    task = await get_task(client, BASE, task_id)
    assert task["task_status"] == "new"
    assert task["task_run_at"] == task["task_create"] + 3_600_000
    # an extra key (SPEC 2): after the seeds' eleven, and last
    assert_task_keys(task)
    assert list(task)[-1] == "task_run_at"
    # the list says it too
    listed = await client.get(f"{BASE}/tasks", params={"ids": str(task_id)})
    assert (await listed.json())["tasks"][0]["task_run_at"] == task["task_run_at"]


async def test_a_task_with_no_delay_has_no_due_time(client: TestClient) -> None:
    task_id = await submit(client, BASE, "echo", {})
    task = await wait_status(client, BASE, task_id, "success")
    assert "task_run_at" not in task


async def test_the_due_time_goes_when_the_task_stops_waiting(client: TestClient) -> None:
    paused = await submit(client, BASE, "echo", {}, delay=3600)
    response = await client.put(f"{BASE}/tasks/{paused}", params={"action": "pause"})
    assert response.status == 202
    assert "task_run_at" not in await response.json()
    # resumed, it runs at once: nothing to wait for
    response = await client.put(f"{BASE}/tasks/{paused}", params={"action": "resume"})
    assert "task_run_at" not in await response.json()
    # a short delay: due, run, done
    soon = await submit(client, BASE, "echo", {}, delay=0.2)
    assert "task_run_at" in await get_task(client, BASE, soon)
    assert "task_run_at" not in await wait_status(client, BASE, soon, "success")


async def test_a_task_waiting_for_a_retry_says_when(start: Start) -> None:
    client = await start(retry_backoff=60.0, retry_backoff_max=60.0)
    task_id = await submit(client, BASE, "fail", {"message": "first try"}, max_retries=1)
    task = await wait_status(client, BASE, task_id, "restoring")
    # 60 s of backoff with jitter: between half and all of it after the failure was written
    assert task["task_update"] + 29_000 <= task["task_run_at"] <= task["task_update"] + 60_000
    assert_task_keys(task)
    assert list(task)[-1] == "task_run_at"
    # cancelled, it waits no more
    cancelled = await client.put(f"{BASE}/tasks/{task_id}", params={"action": "cancel"})
    assert "task_run_at" not in await cancelled.json()


async def test_run_at_is_an_absolute_due_time(client: TestClient) -> None:
    """`run_at` beside `delay`: an ISO-8601 time with its offset, or epoch milliseconds."""
    ahead_ms = (int(time.time()) + 3600) * 1000
    iso = datetime.fromtimestamp(ahead_ms / 1000, timezone(timedelta(hours=2))).isoformat()
    by_iso = await submit(client, BASE, "echo", {}, run_at=iso)
    assert (await get_task(client, BASE, by_iso))["task_run_at"] == ahead_ms
    zulu = datetime.fromtimestamp(ahead_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    by_zulu = await submit(client, BASE, "echo", {}, run_at=zulu)
    assert (await get_task(client, BASE, by_zulu))["task_run_at"] == ahead_ms
    by_epoch = await submit(client, BASE, "echo", {}, run_at=str(ahead_ms + 250))
    assert (await get_task(client, BASE, by_epoch))["task_run_at"] == ahead_ms + 250
    # a time past: due at once
    past = await submit(client, BASE, "echo", {}, run_at="2020-01-01T00:00:00Z")
    assert "task_run_at" not in await wait_status(client, BASE, past, "success")


async def test_the_same_run_at_with_an_idempotency_key_is_a_replay(client: TestClient) -> None:
    """A delay counts from each request; a run_at is the same time in a replay."""
    url = f"{BASE}/jobs/echo"
    run_at = str(int(time.time() * 1000) + 3_600_000)
    headers = {"Idempotency-Key": "nightly-report"}
    first = await client.post(url, json={}, params={"run_at": run_at}, headers=headers)
    again = await client.post(url, json={}, params={"run_at": run_at}, headers=headers)
    assert first.status == again.status == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (await first.json()) == (await again.json())


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"run_at": "tomorrow"}, "must be an ISO-8601 time with an offset"),
        ({"run_at": "2030-01-01T09:00:00"}, "needs an offset or Z"),
        ({"run_at": "1796198400"}, "takes epoch milliseconds, but got '1796198400' (before 1973"),
        ({"run_at": "-5"}, "must be a time from 1973 on"),
        ({"run_at": str(2**53 + 1)}, "out of range"),
        ({"run_at": "2030-01-01T09:00:00Z", "delay": "5"}, "can't be given together"),
    ],
)
async def test_a_bad_run_at_is_a_400_that_says_why(
    client: TestClient, query: dict[str, str], message: str
) -> None:
    response = await client.post(f"{BASE}/jobs/echo", json={}, params=query)
    assert response.status == 400
    assert message in (await response.json())["message"]

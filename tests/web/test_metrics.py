"""GET /metrics: Prometheus text a scraper parses, with numbers that follow what the tasks do."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.metrics import TaskCounts
from service.model import Event, EventKind, GraphRef, Status
from service.web import create_app
from tests.conftest import make_settings, submit, wait_for, wait_status

BASE = "/graphs/hugegraph"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: Any) -> Samples:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def wait_metric(client: Any, name: str, expected: float, **labels: str) -> Samples:
    """Scrapes until `name{labels}` is `expected` (counts of the store arrive in the background)."""
    last: list[float | None] = [None]

    async def probe() -> Samples | None:
        samples = await scrape(client)
        last[0] = value(samples, name, **labels)
        return samples if last[0] == expected else None

    try:
        return await wait_for(probe, 10.0, f"{name}{labels} == {expected}")
    except AssertionError:
        raise AssertionError(f"{name}{labels} is {last[0]}, expected {expected}") from None


async def test_task_metrics_follow_what_tasks_do(client: TestClient) -> None:
    echoes = [await submit(client, BASE, "echo", {"n": n}) for n in range(3)]
    failing = await submit(client, BASE, "fail", {"message": "no"}, max_retries=1)
    for task_id in echoes:
        await wait_status(client, BASE, task_id, "success")
    await wait_status(client, BASE, failing, "failed")

    samples = await wait_metric(client, "sidetask_tasks", 3, status="success", type="echo")
    assert value(samples, "sidetask_tasks", status="failed", type="fail") == 1
    assert value(samples, "sidetask_submissions_total", type="echo") == 3
    assert value(samples, "sidetask_submissions_total", type="fail") == 1
    assert value(samples, "sidetask_completions_total", type="echo", outcome="success") == 3
    assert value(samples, "sidetask_completions_total", type="fail", outcome="failed") == 1
    assert value(samples, "sidetask_retries_total", type="fail") == 1
    # a run ends in success, failure or a retry: the failing task ran twice
    assert value(samples, "sidetask_task_run_seconds_count", type="echo") == 3
    assert value(samples, "sidetask_task_run_seconds_count", type="fail") == 2
    assert value(samples, "sidetask_queue_depth") == 0
    assert value(samples, "sidetask_tasks", status="running", type="echo") in (None, 0)

    response = await client.delete(f"{BASE}/tasks/{echoes[0]}")
    assert response.status == 204
    samples = await scrape(client)
    assert value(samples, "sidetask_tasks", status="success", type="echo") == 2


async def test_queue_depth_and_the_oldest_waiting_task(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await aiohttp_client(create_app(make_settings(tmp_path, concurrency=1)))
    blocker = await submit(client, BASE, "sleep", {"steps": 1000, "interval": 0.05})
    await wait_status(client, BASE, blocker, "running")
    waiting = [await submit(client, BASE, "echo", {}) for _ in range(2)]
    await submit(client, BASE, "echo", {}, delay=3600)  # waiting too, but not due

    await wait_metric(client, "sidetask_queue_depth", 3)

    async def oldest() -> float | None:
        age = value(await scrape(client), "sidetask_oldest_waiting_seconds")
        return age if age and age > 0 else None

    assert await wait_for(oldest, 10.0, "the oldest waiting task to have waited") > 0

    response = await client.put(f"{BASE}/tasks/{blocker}", params={"action": "cancel"})
    assert response.status == 202
    for task_id in waiting:
        await wait_status(client, BASE, task_id, "success")
    samples = await wait_metric(client, "sidetask_queue_depth", 1)  # the delayed one
    assert value(samples, "sidetask_oldest_waiting_seconds") == 0


async def test_tasks_stored_before_the_start_are_counted(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    first = await aiohttp_client(create_app(settings))
    done = [await submit(first, BASE, "echo", {}) for _ in range(2)]
    paused = await submit(first, BASE, "echo", {}, delay=3600)
    assert (await first.put(f"{BASE}/tasks/{paused}", params={"action": "pause"})).status == 202
    for task_id in done:
        await wait_status(first, BASE, task_id, "success")
    await first.close()

    second = await aiohttp_client(create_app(settings))
    samples = await wait_metric(second, "sidetask_tasks", 2, status="success", type="echo")
    assert value(samples, "sidetask_tasks", status="pending", type="echo") == 1
    # nothing was submitted to this process
    assert value(samples, "sidetask_submissions_total", type="echo") in (None, 0)

    # a task older than the process changes: its old status is found again by a recount
    assert (await second.put(f"{BASE}/tasks/{paused}", params={"action": "resume"})).status == 202
    await wait_status(second, BASE, paused, "success")
    samples = await wait_metric(second, "sidetask_tasks", 0, status="pending", type="echo")
    assert value(samples, "sidetask_tasks", status="success", type="echo") == 3


async def test_http_requests_by_route_template(client: TestClient) -> None:
    assert (await client.get(f"{BASE}/tasks/12345")).status == 404
    assert (await client.get("/graphspaces/DEFAULT/graphs/hugegraph/tasks")).status == 200
    assert (await client.get("/no/such/route")).status == 404
    response = await client.get("/metrics")
    text = await response.text()
    assert "12345" not in text  # raw paths would make one series per task
    samples = await scrape(client)
    route = "/graphs/{graph}/tasks/{id}"
    assert (
        value(samples, "sidetask_http_requests_total", method="GET", route=route, status="404") == 1
    )
    listed = "/graphspaces/{graphspace}/graphs/{graph}/tasks"
    assert (
        value(samples, "sidetask_http_requests_total", method="GET", route=listed, status="200")
        == 1
    )
    assert (
        value(
            samples, "sidetask_http_requests_total", method="GET", route="unmatched", status="404"
        )
        == 1
    )
    assert (
        value(samples, "sidetask_http_request_duration_seconds_count", method="GET", route=route)
        == 1
    )
    assert value(samples, "sidetask_sse_subscribers") is not None
    assert value(samples, "sidetask_progress_coalesced_total") is not None


async def test_open_event_streams_are_counted(client: TestClient) -> None:
    await wait_metric(client, "sidetask_sse_subscribers", 0)
    async with client.get(f"{BASE}/events") as one, client.get("/events") as two:
        assert one.status == 200 and two.status == 200
        await wait_metric(client, "sidetask_sse_subscribers", 2)
    await wait_metric(client, "sidetask_sse_subscribers", 0)


async def test_each_app_has_its_own_registry(aiohttp_client: Any, tmp_path: Path) -> None:
    one = await aiohttp_client(create_app(make_settings(tmp_path / "one")))
    two = await aiohttp_client(create_app(make_settings(tmp_path / "two")))
    await submit(one, BASE, "echo", {})
    await submit(one, BASE, "echo", {})
    await submit(two, BASE, "echo", {})
    assert value(await scrape(one), "sidetask_submissions_total", type="echo") == 2
    assert value(await scrape(two), "sidetask_submissions_total", type="echo") == 1


# --- the counts' bookkeeping, without a server ---

GRAPH = GraphRef("DEFAULT", "hugegraph")


def event(event_id: int, task_id: int, kind: EventKind, status: Status | None = None) -> Event:
    return Event(event_id, kind, task_id, GRAPH, "echo", status, b"{}")


async def test_a_count_is_fenced_by_event_ids() -> None:
    counts = TaskCounts()
    counted = asyncio.Event()
    release = asyncio.Event()
    last_ids = iter([2, 2])

    async def count() -> dict[tuple[str, str], int]:
        counted.set()
        await release.wait()
        return {("new", "echo"): 2}  # tasks 1 and 2, as the store saw them

    async def last_event_id() -> int:
        return next(last_ids)

    counts.apply(event(1, 1, EventKind.CREATED))
    counts.apply(event(2, 2, EventKind.CREATED))
    recount = asyncio.create_task(counts.recount(count, last_event_id))
    async with asyncio.timeout(5):
        await counted.wait()
    counts.apply(event(3, 1, EventKind.STATUS, Status.SCHEDULING))  # after the count's snapshot
    assert not counts.ready
    release.set()
    async with asyncio.timeout(5):
        await recount
    assert counts.ready and not counts.stale
    assert counts.counts == {("new", "echo"): 1, ("scheduling", "echo"): 1}


async def test_a_change_of_a_task_never_seen_asks_for_a_recount() -> None:
    counts = TaskCounts()

    async def count() -> dict[tuple[str, str], int]:
        return {("pending", "echo"): 1}

    async def last_event_id() -> int:
        return 10

    async with asyncio.timeout(5):
        await counts.recount(count, last_event_id)
    counts.apply(event(11, 7, EventKind.STATUS, Status.RESTORING))  # task 7 predates the process
    assert counts.stale
    assert counts.counts[("restoring", "echo")] == 1
    counts.apply(event(12, 7, EventKind.STATUS, Status.QUEUED))  # now its status is known
    assert counts.counts[("restoring", "echo")] == 0 and counts.counts[("queued", "echo")] == 1


async def test_progress_reports_coalesced_away_are_counted(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    from tests.sup_jobs import JOBS

    client = await aiohttp_client(create_app(make_settings(tmp_path, jobs=JOBS)))
    task_id = await submit(client, BASE, "burst", {"count": 20_000})
    task = await wait_status(client, BASE, task_id, "success")
    assert task["task_progress"] == 20_000  # the latest value arrived
    samples = await scrape(client)
    coalesced = value(samples, "sidetask_progress_coalesced_total")
    # 20,000 reports in a tight loop: nearly all were replaced before a write
    assert coalesced is not None and coalesced > 10_000

"""Rate limits per job type (type_rate_limits), end to end on both stores: a type's tasks are
claimed at most N in each window of a second (or minute), the others unbounded; the limits
show in GET /types. Several replicas on PostgreSQL: tests/pg/test_rate_limits_replicas.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from service.web import create_app
from tests.conftest import make_settings, submit, wait_status
from tests.sup_util import rows

BASE = "/graphs/hugegraph"


def claim_times(db: Path | str, task_ids: list[int], status: str) -> list[int]:
    """When each task was claimed: the time of its event of the claim's status."""
    marks = ", ".join("?" * len(task_ids))
    found = rows(
        db,
        f"SELECT create_ms FROM events WHERE kind = 'task.status' AND status = ?"
        f" AND task_id IN ({marks}) ORDER BY create_ms",
        (status, *task_ids),
    )
    return [int(ms) for (ms,) in found]


async def test_a_type_starts_at_most_n_a_second(
    aiohttp_client: Any, tmp_path: Path, any_db: Path | str
) -> None:
    settings = make_settings(tmp_path, any_db, type_rate_limits={"echo": "3/s"})
    client: TestClient = await aiohttp_client(create_app(settings))
    types = await (await client.get("/types")).json()
    assert types["rate_limits"] == {"echo": "3/s"}
    limited = [await submit(client, BASE, "echo", {"n": n}) for n in range(9)]
    free = [await submit(client, BASE, "sleep", {"steps": 1, "interval": 0}) for _ in range(6)]
    for task_id in free:  # not held back by the other type's limit
        await wait_status(client, BASE, task_id, "success")
    done = await asyncio.gather(*(wait_status(client, BASE, t, "success") for t in limited))
    assert len(done) == 9
    status = "queued" if isinstance(any_db, Path) else "scheduling"
    times = claim_times(any_db, limited, status)
    assert len(times) == 9
    # nine at three a second take three windows: the last claimed two windows after the first
    assert times[-1] - times[0] > 1000
    if isinstance(any_db, Path):  # one clock for the windows and the events: exact
        per_window: dict[int, int] = {}
        for ms in times:
            per_window[ms // 1000] = per_window.get(ms // 1000, 0) + 1
        assert max(per_window.values()) == 3 and len(per_window) == 3


async def test_external_workers_claims_obey_the_limit(
    aiohttp_client: Any, tmp_path: Path, any_db: Path | str
) -> None:
    """A worker's claim is a start: at most two of `resize` a second, `thumbnail` handed out
    past it, and a claim held by the limit waits until the window opens and gets the task
    then (nothing else wakes it: every task was submitted before)."""
    settings = make_settings(
        tmp_path,
        any_db,
        external_types=("resize", "thumbnail"),
        type_rate_limits={"resize": "2/s"},
    )
    client: TestClient = await aiohttp_client(create_app(settings))
    limited = [await submit(client, BASE, "resize", {"n": n}) for n in range(5)]
    free = [await submit(client, BASE, "thumbnail", {"n": n}) for n in range(2)]
    claimed: list[tuple[int, str]] = []
    for _ in range(7):
        response = await asyncio.wait_for(
            client.post("/workers/w1/claim", params={"wait": "10"}), 20
        )
        assert response.status == 200, await response.text()  # none waited its whole wait
        body = await response.json()
        claimed.append((body["id"], body["type"]))
    assert sorted(i for i, _ in claimed) == sorted(limited + free)
    # the thumbnails were not held back with the resizes: claimed before the last of them
    order = [i for i, _ in claimed]
    assert max(order.index(i) for i in free) < order.index(limited[-1])
    times = claim_times(any_db, limited, "scheduled")
    assert len(times) == 5
    # five at two a second take three windows
    assert times[-1] - times[0] > 1000
    if isinstance(any_db, Path):  # one clock for the windows and the events: exact
        per_window: dict[int, int] = {}
        for ms in times:
            per_window[ms // 1000] = per_window.get(ms // 1000, 0) + 1
        assert max(per_window.values()) == 2 and len(per_window) == 3

"""GET {base}/tasks's name prefix and created / updated ranges, alone and with status,
type, order and pages, on both stores: each answer is the full list filtered here."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service import clock
from service.config import Settings
from service.store import postgres as postgres_store
from service.store import sqlite as sqlite_store
from tests.conftest import make_settings, submit, wait_for, wait_status
from tests.web.test_tasks_api import assert_error, list_tasks

#: long enough that a delayed task stays `new` for the whole test
LATER = 3600
NAMES = ["nightly-report", "nightly-export", "nightly", "night", "import a.csv", "import b.csv"]


@pytest.fixture
def settings(tmp_path: Path, any_db: Path | str) -> Settings:
    return make_settings(tmp_path, any_db)


@pytest.fixture(params=["by-index", "by-name-or-id-range", "in-id-order"])
def reading(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """SQLite reads a selective range by its index and a broad one a name at a time, or in
    id order between a time range's first and last id, or else in id order: each way
    (every range here is small, so the others are made to look broad); PostgreSQL is
    given a time range's first and last id, or not."""
    if request.param != "by-index":
        monkeypatch.setattr(sqlite_store, "SELECTION_PROBE", 1)
    if request.param == "in-id-order":
        monkeypatch.setattr(sqlite_store, "NAMES_AT_MOST", 0)
        monkeypatch.setattr(sqlite_store, "ID_RANGE_AT_MOST", 0)
        monkeypatch.setattr(postgres_store, "ID_RANGE_AT_MOST", 0)
    return str(request.param)


async def next_ms(after: int) -> None:
    """Waits until the clock has passed `after` (so tasks made next are created later)."""

    async def passed() -> bool:
        return clock.now_ms() > after

    await wait_for(passed, what="the clock to move on")


async def make_tasks(client: TestClient, base: str) -> list[dict[str, Any]]:
    """Tasks of each name and of two types, some done and some waiting, created over
    several milliseconds; every one as the full list gives it."""
    done = []
    for round_ in range(2):
        for name in NAMES:
            job = "sleep" if name.startswith("import") else "echo"
            query: dict[str, Any] = {"name": name}
            if round_ == 0 or job == "sleep":
                query["delay"] = LATER
            task_id = await submit(client, base, job, {}, **query)
            if "delay" not in query:
                done.append(task_id)
            await next_ms(clock.now_ms())
    for task_id in done:
        await wait_status(client, base, task_id, "success")
    return list((await list_tasks(client, base, limit=-1))["tasks"])


def ids(tasks: list[dict[str, Any]], keep: Callable[[dict[str, Any]], bool]) -> list[int]:
    return [t["id"] for t in tasks if keep(t)]


async def listed(client: TestClient, base: str, **query: Any) -> list[int]:
    return [t["id"] for t in (await list_tasks(client, base, limit=-1, **query))["tasks"]]


async def test_name_prefix(client: TestClient, base: str, reading: str) -> None:
    tasks = await make_tasks(client, base)
    for prefix in [
        "nightly",
        "night",
        "nightly-",
        "import",
        "import a",
        "i",
        "x",
        "nightly-report",
    ]:
        expected = ids(tasks, lambda t, p=prefix: t["task_name"].startswith(p))
        assert await listed(client, base, name=prefix) == expected, prefix
    # case-sensitive, and a prefix is not a pattern
    assert await listed(client, base, name="Night") == []
    assert await listed(client, base, name="night%") == []
    assert await listed(client, base, name="n_ght") == []


async def test_created_and_updated_ranges(client: TestClient, base: str, reading: str) -> None:
    tasks = await make_tasks(client, base)
    creates = sorted({t["task_create"] for t in tasks})
    updates = sorted({t["task_update"] for t in tasks})
    assert len(creates) >= 6 and len(updates) >= 6
    for key, field, times in (
        ("created", "task_create", creates),
        ("updated", "task_update", updates),
    ):
        low, high = times[2], times[-3]
        assert await listed(client, base, **{f"{key}_from": low}) == ids(
            tasks, lambda t, f=field, lo=low: t[f] >= lo
        )
        assert await listed(client, base, **{f"{key}_to": high}) == ids(
            tasks, lambda t, f=field, hi=high: t[f] < hi
        )
        assert await listed(client, base, **{f"{key}_from": low, f"{key}_to": high}) == ids(
            tasks, lambda t, f=field, lo=low, hi=high: lo <= t[f] < hi
        )
    # an ISO-8601 time is the same instant in epoch milliseconds
    low = creates[3]
    iso = datetime.datetime.fromtimestamp(low / 1000, datetime.UTC).isoformat()
    assert await listed(client, base, created_from=iso) == ids(
        tasks, lambda t: t["task_create"] >= low
    )
    assert await listed(client, base, created_from=iso.replace("+00:00", "Z")) == ids(
        tasks, lambda t: t["task_create"] >= low
    )
    # the updated range finds the tasks that ran, which changed after every waiting one
    waiting_last = max(t["task_update"] for t in tasks if t["task_status"] == "new")
    assert await listed(client, base, updated_from=waiting_last + 1) == ids(
        tasks, lambda t: t["task_update"] > waiting_last
    )


async def test_filters_combine_with_status_type_order_and_pages(
    client: TestClient, base: str, reading: str
) -> None:
    tasks = await make_tasks(client, base)
    middle = sorted(t["task_create"] for t in tasks)[len(tasks) // 3]
    expected = ids(
        tasks,
        lambda t: (
            t["task_name"].startswith("night")
            and t["task_type"] == "echo"
            and t["task_status"] == "new"
            and t["task_create"] >= middle
        ),
    )
    query = {"name": "night", "type": "echo", "status": "NEW", "created_from": middle}
    assert await listed(client, base, **query) == expected
    assert await listed(client, base, order="desc", **query) == expected[::-1]
    several = ids(
        tasks,
        lambda t: t["task_name"].startswith("nightly") and t["task_status"] in ("new", "success"),
    )
    assert await listed(client, base, name="nightly", status="new,success") == several
    # pages of 2, either order, as HugeGraph's clients walk them
    for order, want in (("asc", several), ("desc", several[::-1])):
        got: list[int] = []
        page = ""
        while page is not None:
            body = await list_tasks(
                client, base, name="nightly", status="new,success", order=order, limit=2, page=page
            )
            got.extend(t["id"] for t in body["tasks"])
            page = body["page"]
        assert got == want, order
    # a limit without a page
    assert [
        t["id"] for t in (await list_tasks(client, base, name="import", limit=2))["tasks"]
    ] == ids(tasks, lambda t: t["task_name"].startswith("import"))[:2]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"name": ""}, "The parameter 'name' must not be empty (leave it out for every name)"),
        ({"name": "x" * 257}, "The parameter 'name' must be at most 256 UTF-8 bytes"),
        (
            {"created_from": "yesterday"},
            "The parameter 'created_from' must be a time: epoch milliseconds or ISO-8601 "
            "(e.g. 2026-12-01T10:00:00Z) from 1970 on, but got 'yesterday'",
        ),
        (
            {"updated_to": "-1"},
            "The parameter 'updated_to' must be a time: epoch milliseconds or ISO-8601 "
            "(e.g. 2026-12-01T10:00:00Z) from 1970 on, but got '-1'",
        ),
        (
            {"created_to": "2026-13-01"},
            "The parameter 'created_to' must be a time: epoch milliseconds or ISO-8601 "
            "(e.g. 2026-12-01T10:00:00Z) from 1970 on, but got '2026-13-01'",
        ),
        (
            {"created_from": "2000", "created_to": "1000"},
            "The parameter 'created_from' (2000) must be before 'created_to' (1000)",
        ),
        (
            {"updated_from": "5", "updated_to": "5"},
            "The parameter 'updated_from' (5) must be before 'updated_to' (5)",
        ),
        (
            {"ids": "1", "name": "a"},
            "Not support name when query task by ids, but got name='a'",
        ),
        (
            {"ids": "1", "created_from": "0"},
            "Not support created_from when query task by ids, but got created_from='0'",
        ),
    ],
)
async def test_a_bad_filter_is_a_400_naming_it(
    client: TestClient, base: str, query: dict[str, str], message: str
) -> None:
    await assert_error(await client.get(f"{base}/tasks", params=query), 400, message)

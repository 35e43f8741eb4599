"""A list by several statuses at once (`status=new,queued`): what the dashboard's counter
groups (waiting, running, …) filter by."""

from __future__ import annotations

import sqlite3

from aiohttp.test_utils import TestClient

from service.config import Settings
from tests.conftest import BASES, submit, wait_status

BASE = BASES[0]
LATER = 3600


async def _ids(client: TestClient, **query: str) -> list[int]:
    response = await client.get(f"{BASE}/tasks", params=query)
    assert response.status == 200, await response.text()
    return [t["id"] for t in (await response.json())["tasks"]]


async def test_a_list_by_several_statuses(client: TestClient) -> None:
    waiting = [await submit(client, BASE, "echo", {}, delay=LATER) for _ in range(3)]
    paused = await submit(client, BASE, "echo", {}, delay=LATER)
    assert (await client.put(f"{BASE}/tasks/{paused}", params={"action": "pause"})).status == 202
    failed = await submit(client, BASE, "fail", {"message": "no"})
    done = await submit(client, BASE, "echo", {})
    await wait_status(client, BASE, failed, "failed")
    await wait_status(client, BASE, done, "success")

    assert await _ids(client, status="new,pending") == [*waiting, paused]
    # any case, any order of the names; one name is HugeGraph's own filter
    assert await _ids(client, status="FAILED,New") == [*waiting, failed]
    assert await _ids(client, status="pending") == [paused]
    # newest first, paged, and with a type
    first = await client.get(
        f"{BASE}/tasks",
        params={"status": "new,pending,failed", "order": "desc", "limit": "2", "page": ""},
    )
    body = await first.json()
    assert [t["id"] for t in body["tasks"]] == [failed, paused]
    rest = await _ids(client, status="new,pending,failed", order="desc", page=body["page"])
    assert rest == waiting[::-1]
    assert await _ids(client, status="new,failed", type="fail") == [failed]


async def test_a_group_with_unknown_lists_the_rows_this_version_cannot_read(
    client: TestClient, settings: Settings
) -> None:
    damaged = await submit(client, BASE, "echo", {}, delay=LATER)
    waiting = await submit(client, BASE, "echo", {}, delay=LATER)
    with sqlite3.connect(settings.db) as conn:
        conn.execute("UPDATE tasks SET status = 'hibernating' WHERE id = ?", (damaged,))
    assert await _ids(client, status="new,unknown") == [damaged, waiting]
    assert await _ids(client, status="new") == [waiting]
    assert await _ids(client, status="unknown,success") == [damaged]


async def test_a_bad_name_in_the_list_is_a_400_naming_it(client: TestClient) -> None:
    for text, bad in (("new,sleeping", "sleeping"), ("new,", ""), (",new", "")):
        response = await client.get(f"{BASE}/tasks", params={"status": text})
        assert response.status == 400, text
        body = await response.json()
        assert body["message"].startswith(
            f"Invalid status '{bad}', valid statuses are: UNKNOWN, NEW"
        ), body

"""POST {base}/tasks/bulk end to end on both stores: the tasks a filter matches (the same
terms as the list's), in batches, with what changed and what was refused and why; what
it refuses to start; and its place beside the other task routes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.config import Settings
from tests.conftest import make_settings, submit, wait_status
from tests.web.test_tasks_api import assert_error, list_tasks

LATER = 3600


@pytest.fixture
def settings(tmp_path: Path, any_db: Path | str) -> Settings:
    # batches of 4, so a few tasks take several
    return make_settings(tmp_path, any_db, bulk_batch=4)


async def bulk(client: TestClient, base: str, **query: Any) -> dict[str, Any]:
    response = await client.post(f"{base}/tasks/bulk", params={k: str(v) for k, v in query.items()})
    assert response.status == 200, await response.text()
    return dict(await response.json())


async def statuses(client: TestClient, base: str) -> dict[int, str]:
    return {t["id"]: t["task_status"] for t in (await list_tasks(client, base, limit=-1))["tasks"]}


async def test_a_filter_takes_its_tasks_in_batches_and_leaves_the_others(
    client: TestClient, base: str
) -> None:
    nightly = [
        await submit(client, base, "echo", {}, name=f"nightly {n}", delay=LATER) for n in range(10)
    ]
    others = [await submit(client, base, "echo", {}, name="other", delay=LATER) for _ in range(3)]
    sleeps = [
        await submit(client, base, "sleep", {}, name="nightly sleep", delay=LATER) for _ in range(2)
    ]
    answer = await bulk(client, base, action="pause", name="nightly", type="echo")
    assert answer == {
        "action": "pause",
        "matched": 10,
        "changed": 10,
        "refused": {},
        "batches": 3,
    }
    now = await statuses(client, base)
    assert {now[t] for t in nightly} == {"pending"}
    assert {now[t] for t in others + sleeps} == {"new"}
    # the same filter again: each is refused now, for the single action's reason
    answer = await bulk(client, base, action="pause", name="nightly", type="echo")
    assert (answer["matched"], answer["changed"]) == (10, 0)
    assert answer["refused"] == {"Can't pause task in status PENDING, it is paused already": 10}
    answer = await bulk(client, base, action="resume", status="pending")
    assert (answer["matched"], answer["changed"], answer["refused"]) == (10, 10, {})
    for task_id in nightly:
        await wait_status(client, base, task_id, "success")


async def test_refusals_are_counted_by_reason(client: TestClient, base: str) -> None:
    done = [await submit(client, base, "echo", {}) for _ in range(3)]
    broke = [await submit(client, base, "fail", {"message": "no"}) for _ in range(2)]
    waiting = [await submit(client, base, "echo", {}, delay=LATER) for _ in range(2)]
    for task_id in done:
        await wait_status(client, base, task_id, "success")
    for task_id in broke:
        await wait_status(client, base, task_id, "failed")
    answer = await bulk(client, base, action="retry", all="true")
    assert answer["matched"] == 7 and answer["changed"] == 2
    assert answer["refused"] == {
        "Can't retry task in status SUCCESS, only a failed or cancelled task can be retried": 3,
        "Can't retry task in status NEW, only a failed or cancelled task can be retried": 2,
    }
    for task_id in broke:
        task = await wait_status(client, base, task_id, "failed", "restoring")
        assert task["task_retries"] == 1
    for task_id in broke:
        await wait_status(client, base, task_id, "failed")
    # delete: completed ones go; incomplete ones only with force
    answer = await bulk(client, base, action="delete", all="true")
    assert (answer["matched"], answer["changed"]) == (7, 5)
    assert answer["refused"] == {
        "Can't delete incomplete task in status NEW, Please try to cancel the task first": 2
    }
    assert sorted(await statuses(client, base)) == waiting
    answer = await bulk(client, base, action="delete", all="true", force="true")
    assert (answer["matched"], answer["changed"], answer["refused"]) == (2, 2, {})
    assert await statuses(client, base) == {}
    # nothing to take is an answer too
    answer = await bulk(client, base, action="cancel", all="true")
    assert answer == {"action": "cancel", "matched": 0, "changed": 0, "refused": {}, "batches": 0}


async def test_time_ranges_and_several_statuses(client: TestClient, base: str) -> None:
    first = [await submit(client, base, "echo", {}, delay=LATER) for _ in range(3)]
    created = (await list_tasks(client, base, limit=-1))["tasks"][-1]["task_create"]
    later = []
    while (
        not later
        or (await list_tasks(client, base, ids=later[-1]))["tasks"][0]["task_create"] <= created
    ):
        later.append(await submit(client, base, "echo", {}, delay=LATER))
    answer = await bulk(client, base, action="cancel", created_to=created + 1, status="new,pending")
    assert (answer["matched"], answer["changed"]) == (3, 3)
    now = await statuses(client, base)
    assert {now[t] for t in first} == {"cancelled"}
    assert now[later[-1]] == "new"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            {"action": "cancel"},
            "A bulk cancel needs a filter (status, type, name, created_from, created_to, "
            "updated_from, updated_to), or all=true for every task of the graph",
        ),
        ({"action": "cancel", "all": "true", "status": "new"}, None),
        ({"action": "frobnicate", "all": "true"}, None),
        ({"all": "true"}, None),
        ({"action": "cancel", "all": "true", "force": "true"}, None),
        ({"action": "cancel", "status": "sleeping"}, None),
        ({"action": "cancel", "type": "nope"}, None),
        ({"action": "cancel", "name": ""}, None),
        ({"action": "cancel", "updated_from": "soon"}, None),
        ({"action": "cancel", "all": "maybe"}, None),
    ],
)
async def test_a_bad_bulk_request_is_a_400_that_says_what_was_wrong(
    client: TestClient, base: str, query: dict[str, str], message: str | None
) -> None:
    task_id = await submit(client, base, "echo", {}, delay=LATER)
    said = await assert_error(await client.post(f"{base}/tasks/bulk", params=query), 400, message)
    named = {
        "all": "'all'",
        "action": "action",
        "force": "'force'",
        "status": "sleeping",
        "type": "nope",
        "name": "'name'",
        "updated_from": "'updated_from'",
    }
    if message is None:
        wrong = [k for k in query if k != "action"] or ["action"]
        if query.get("action") == "frobnicate" or "action" not in query:
            wrong = ["action"]
        assert any(named[k] in said for k in wrong), said
    assert (await statuses(client, base)) == {task_id: "new"}


async def test_other_methods_on_the_bulk_path_are_405(client: TestClient, base: str) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = await client.request(method, f"{base}/tasks/bulk")
        assert response.status == 405, method
        assert "POST" in response.headers["Allow"]

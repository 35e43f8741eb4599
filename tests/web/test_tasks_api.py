"""The Task API (SPEC 1-4, 6) end to end through a real server on loopback, and the
examples of the seeds reproduced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from service.config import Settings
from service.jobs import JobContext
from service.web import create_app
from service.web.keys import STORE, SUPERVISOR
from tests.conftest import get_task, make_settings, submit, wait_for, wait_status

JSON_TYPE = "application/json;charset=UTF-8"
#: SPEC 2: the seeds' eleven keys, in their order (task_result only once there is one)
SEED_KEYS = [
    "task_name", "task_progress", "task_create", "task_status", "task_update", "task_result",
    "task_retries", "id", "task_type", "task_callable", "task_input",
]  # fmt: skip
ALL_STATUS_NAMES = [
    "UNKNOWN", "NEW", "SCHEDULING", "SCHEDULED", "QUEUED", "PENDING", "RESTORING", "RUNNING",
    "SUCCESS", "CANCELLING", "CANCELLED", "FAILED",
]  # fmt: skip
#: long enough that a delayed task stays `new` for the whole test
LATER = 3600
#: an integer far beyond any range (and beyond what int() parses by default)
HUGE = pytest.param("9" * 5000, id="5000-digits")


async def assert_error(response: ClientResponse, status: int, message: str | None = None) -> str:
    """SPEC 6: HugeGraph's error body, with an honest status; returns the message."""
    text = await response.text()
    assert response.status == status, text
    assert response.headers["Content-Type"] == JSON_TYPE
    body = orjson.loads(text)
    assert list(body) == ["exception", "message", "cause"], body
    assert all(isinstance(value, str) for value in body.values()), body
    assert body["exception"] and body["message"]
    assert "Traceback" not in text
    if message is not None:
        assert body["message"] == message
    return str(body["message"])


async def ok_json(response: ClientResponse, status: int = 200) -> Any:
    text = await response.text()
    assert response.status == status, text
    assert response.headers["Content-Type"] == JSON_TYPE
    return orjson.loads(text)


def assert_task_keys(task: dict[str, Any]) -> None:
    """The seeds' keys come first and in the seeds' order; sidetask's own follow."""
    present = [key for key in SEED_KEYS if key in task]
    assert list(task)[: len(present)] == present, list(task)
    assert {"task_name", "task_progress", "task_create", "task_status", "task_update",
            "task_retries", "id", "task_type", "task_callable"} <= set(present)  # fmt: skip
    assert all(key.startswith("task_") for key in list(task)[len(present) :]), list(task)


# --- a job whose end the test controls ---

#: per task id, the gate a `gated` job waits on
GATES: dict[int, asyncio.Event] = {}


def gate(task_id: int) -> asyncio.Event:
    return GATES.setdefault(task_id, asyncio.Event())


async def gated(ctx: JobContext) -> str:
    """Reports progress 1, then waits for its gate. A cancel is held until the gate opens,
    so the test can see `cancelling` for as long as it needs."""
    ctx.progress(1)
    opened = gate(ctx.task_id)
    try:
        await opened.wait()
    except asyncio.CancelledError:
        await opened.wait()
        raise
    return "released"


@pytest.fixture
def settings(tmp_path: Path, any_db: Path | str) -> Settings:
    """On both stores: every test of the task routes runs on SQLite and on PostgreSQL."""
    return make_settings(tmp_path, any_db, jobs={"gated": f"{__name__}:gated"})


@pytest.fixture
def gates(client: TestClient) -> Any:
    """Opens every gate before the app shuts down (this fixture is torn down before `client`)."""
    GATES.clear()
    yield gate
    for event in GATES.values():
        event.set()
    GATES.clear()


async def wait_progress(
    client: TestClient, base: str, task_id: int, at_least: int
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        task = await get_task(client, base, task_id)
        return task if task["task_progress"] >= at_least else None

    return await wait_for(probe, what=f"task {task_id} to report progress {at_least}")


async def put_action(client: TestClient, base: str, task_id: int, action: str) -> ClientResponse:
    return await client.put(f"{base}/tasks/{task_id}", params={"action": action})


async def list_tasks(client: TestClient, base: str, **query: Any) -> dict[str, Any]:
    return dict(await ok_json(await client.get(f"{base}/tasks", params=query)))


def ids_of(body: dict[str, Any]) -> list[int]:
    return [task["id"] for task in body["tasks"]]


# --- the seeds' examples ---


@pytest.fixture
async def gremlin_endpoint(aiohttp_server: Any) -> AsyncIterator[tuple[str, list[Any]]]:
    """A Gremlin HTTP endpoint on loopback answering as HugeGraph's POST /gremlin does."""
    received: list[Any] = []

    async def gremlin(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.json_response(
            {
                "requestId": "a6b3ad8c-6a4a-4ee0-9c2a-0a3c4c1e1f0b",
                "status": {"message": "", "code": 200, "attributes": {}},
                "result": {"data": 0, "meta": {}},
            }
        )

    app = web.Application()
    app.router.add_post("/gremlin", gremlin)
    server = await aiohttp_server(app)
    yield str(server.make_url("/gremlin")), received


@pytest.fixture
async def seed_client(
    aiohttp_client: Any, tmp_path: Path, gremlin_endpoint: tuple[str, list[Any]]
) -> TestClient:
    settings = make_settings(tmp_path, gremlin_url=gremlin_endpoint[0])
    return await aiohttp_client(create_app(settings))


SEED_INPUT = (
    '{"gremlin":"hugegraph.traversal().V()","bindings":{},"language":"gremlin-groovy",'
    '"aliases":{"hugegraph":"graph"}}'
)


def assert_seed_task(task: dict[str, Any], task_id: int) -> None:
    """The seeds' example task as sidetask writes it: same keys, order and values, except the
    timestamps (now) and task_callable (sidetask's own code)."""
    assert list(task)[:11] == SEED_KEYS
    assert {k: task[k] for k in SEED_KEYS} == {
        "task_name": "hugegraph.traversal().V()",
        "task_progress": 0,
        "task_create": task["task_create"],
        "task_status": "success",
        "task_update": task["task_update"],
        "task_result": "0",
        "task_retries": 0,
        "id": task_id,
        "task_type": "gremlin",
        "task_callable": "service.jobs.gremlin.run",
        "task_input": SEED_INPUT,
    }
    assert isinstance(task["task_create"], int) and isinstance(task["task_update"], int)
    assert 0 < task["task_create"] <= task["task_update"]


async def test_seed_list_by_status_in_either_case_and_get(
    seed_client: TestClient, base: str, gremlin_endpoint: tuple[str, list[Any]]
) -> None:
    client = seed_client
    response = await client.post(
        f"{base}/jobs/gremlin",
        json={
            "gremlin": "hugegraph.traversal().V()",
            "bindings": {},
            "language": "gremlin-groovy",
            "aliases": {},
        },
    )
    task_id = (await ok_json(response, 201))["task_id"]
    await wait_status(client, base, task_id, "success")
    waiting = await submit(client, base, "echo", {}, delay=LATER)

    # the script went to the Gremlin endpoint with HugeGraph's aliases for the graph
    assert gremlin_endpoint[1][0]["gremlin"] == "hugegraph.traversal().V()"
    assert gremlin_endpoint[1][0]["aliases"]["graph"] == "hugegraph"

    upper = await client.get(f"{base}/tasks", params={"status": "SUCCESS"})
    lower = await client.get(f"{base}/tasks", params={"status": "success"})
    upper_body, lower_body = await ok_json(upper), await ok_json(lower)
    assert upper_body == lower_body
    assert list(upper_body) == ["tasks"]
    assert ids_of(upper_body) == [task_id]
    assert_seed_task(upper_body["tasks"][0], task_id)

    # get: the same object the list holds; compact JSON
    response = await client.get(f"{base}/tasks/{task_id}")
    raw = await response.read()
    assert response.status == 200 and response.headers["Content-Type"] == JSON_TYPE
    assert orjson.loads(raw) == upper_body["tasks"][0]
    assert raw == orjson.dumps(orjson.loads(raw))
    assert_seed_task(orjson.loads(raw), task_id)

    assert ids_of(await list_tasks(client, base, status="NEW")) == [waiting]


async def test_seed_force_delete(client: TestClient, base: str) -> None:
    task_id = await submit(client, base, "echo", {"n": 1})
    await wait_status(client, base, task_id, "success")

    response = await client.delete(f"{base}/tasks/{task_id}", params={"force": "true"})
    assert response.status == 204
    assert await response.read() == b""

    await assert_error(
        await client.get(f"{base}/tasks/{task_id}"), 404, f"Can't find task with id '{task_id}'"
    )
    assert ids_of(await list_tasks(client, base)) == []


async def test_seed_cancel_a_running_sleep_midway(client: TestClient, base: str) -> None:
    task_id = await submit(client, base, "sleep", {"steps": 10, "interval": 0.2})
    await wait_progress(client, base, task_id, 1)

    body = await ok_json(await put_action(client, base, task_id, "cancel"), 202)
    assert body["cancelled"] is True
    assert list(body)[-1] == "cancelled"
    assert body["id"] == task_id
    assert body["task_status"] in ("cancelling", "cancelled")

    task = await wait_status(client, base, task_id, "cancelled")
    assert 1 <= task["task_progress"] < 10
    assert "task_result" not in task or task["task_result"] != "10"


# --- list ---


async def test_list_is_in_ascending_id_order_with_the_default_limit_of_100(
    client: TestClient, base: str
) -> None:
    ids = await asyncio.gather(
        *(submit(client, base, "echo", {"i": i}, delay=LATER) for i in range(101))
    )

    body = await list_tasks(client, base)
    assert list(body) == ["tasks"]
    assert ids_of(body) == sorted(ids)[:100]
    for task in body["tasks"]:
        assert_task_keys(task)
    assert ids_of(await list_tasks(client, base, limit=-1)) == sorted(ids)
    assert ids_of(await list_tasks(client, base, limit=3)) == sorted(ids)[:3]
    assert ids_of(await list_tasks(client, base, limit=0)) == []


@pytest.mark.parametrize("limit", ["abc", "1.5", "-2", "", "1_0", " 5", "0x10", "\u0663", HUGE])
async def test_list_refuses_a_limit_that_is_not_an_integer_of_at_least_minus_1(
    client: TestClient, base: str, limit: str
) -> None:
    message = await assert_error(await client.get(f"{base}/tasks", params={"limit": limit}), 400)
    assert "limit" in message and repr(limit) in message


async def test_list_by_status_is_case_insensitive(client: TestClient, base: str) -> None:
    done = await submit(client, base, "echo", {})
    waiting = await submit(client, base, "echo", {}, delay=LATER)
    failed = await submit(client, base, "fail", {"message": "boom"})
    await wait_status(client, base, done, "success")
    await wait_status(client, base, failed, "failed")

    for text in ("success", "SUCCESS", "Success"):
        assert ids_of(await list_tasks(client, base, status=text)) == [done]
    assert ids_of(await list_tasks(client, base, status="new")) == [waiting]
    assert ids_of(await list_tasks(client, base, status="FAILED")) == [failed]
    assert ids_of(await list_tasks(client, base, status="running")) == []
    assert ids_of(await list_tasks(client, base, status="success", limit=-1)) == [done]


@pytest.mark.parametrize("status", ["bogus", "", "succes", "success "])
async def test_list_refuses_an_unknown_status_and_lists_the_valid_names(
    client: TestClient, base: str, status: str
) -> None:
    message = await assert_error(await client.get(f"{base}/tasks", params={"status": status}), 400)
    assert f"'{status}'" in message
    for name in ALL_STATUS_NAMES:
        assert name in message


async def test_list_by_ids(client: TestClient, base: str) -> None:
    first = await submit(client, base, "echo", {}, delay=LATER)
    second = await submit(client, base, "echo", {}, delay=LATER)
    third = await submit(client, base, "echo", {}, delay=LATER)
    elsewhere = await submit(client, "/graphspaces/gs1/graphs/other", "echo", {}, delay=LATER)

    query = [("ids", str(third)), ("ids", str(first)), ("ids", "999"), ("ids", str(elsewhere))]
    body = await ok_json(await client.get(f"{base}/tasks", params=query))
    assert list(body) == ["tasks"]
    assert ids_of(body) == [first, third]
    for task in body["tasks"]:
        assert_task_keys(task)
    # `limit` does not cut a query by ids short
    body = await ok_json(
        await client.get(
            f"{base}/tasks", params=[("ids", str(first)), ("ids", str(second)), ("limit", "1")]
        )
    )
    assert ids_of(body) == [first, second]
    assert ids_of(await ok_json(await client.get(f"{base}/tasks", params={"ids": "999"}))) == []
    # though it does not cut them short, a limit that is not one is refused all the same
    message = await assert_error(
        await client.get(f"{base}/tasks", params={"ids": str(first), "limit": "many"}), 400
    )
    assert "limit" in message


async def test_list_by_ids_refuses_status_and_page(client: TestClient, base: str) -> None:
    task_id = await submit(client, base, "echo", {}, delay=LATER)
    await assert_error(
        await client.get(f"{base}/tasks", params={"ids": str(task_id), "status": "SUCCESS"}),
        400,
        "Not support status when query task by ids, but got status='SUCCESS'",
    )
    await assert_error(
        await client.get(f"{base}/tasks", params={"ids": str(task_id), "page": ""}),
        400,
        "Not support page when query task by ids, but got page=''",
    )
    await assert_error(
        await client.get(f"{base}/tasks", params={"ids": str(task_id), "page": "abc"}),
        400,
        "Not support page when query task by ids, but got page='abc'",
    )


@pytest.mark.parametrize("bad", ["x", "0", "-1", "1.0", "", HUGE])
async def test_list_by_ids_refuses_an_id_that_is_not_a_positive_integer(
    client: TestClient, base: str, bad: str
) -> None:
    message = await assert_error(
        await client.get(f"{base}/tasks", params=[("ids", "1"), ("ids", bad)]), 400
    )
    assert "ids" in message and f"'{bad}'" in message


async def walk_pages(client: TestClient, base: str, **query: Any) -> tuple[list[list[int]], int]:
    """Follows page tokens from the first page to the last; the pages' ids and the count."""
    pages: list[list[int]] = []
    token: str | None = ""
    while token is not None:
        body = await list_tasks(client, base, page=token, **query)
        assert list(body) == ["tasks", "page"]
        pages.append(ids_of(body))
        token = body["page"]
        assert token is None or (isinstance(token, str) and token)
        assert len(pages) <= 20, "the page tokens do not end"
    return pages, len(pages)


async def test_pages_cover_every_task_once_and_end_with_null(client: TestClient, base: str) -> None:
    ids = [await submit(client, base, "echo", {}, delay=LATER) for _ in range(5)]

    pages, _ = await walk_pages(client, base, limit=2)
    assert pages == [ids[0:2], ids[2:4], ids[4:5]]
    pages, _ = await walk_pages(client, base, limit=5)
    assert pages == [ids]  # exactly `limit` left: the last page says so, no empty page follows
    pages, _ = await walk_pages(client, base, limit=1)
    assert pages == [[i] for i in ids]
    pages, _ = await walk_pages(client, base, limit=-1)
    assert pages == [ids]
    pages, _ = await walk_pages(client, base)  # the default limit, 100
    assert pages == [ids]


async def test_pages_combine_with_status(client: TestClient, base: str) -> None:
    waiting = []
    done = []
    for _ in range(3):
        waiting.append(await submit(client, base, "echo", {}, delay=LATER))
        done.append(await submit(client, base, "echo", {}))
    for task_id in done:
        await wait_status(client, base, task_id, "success")

    pages, _ = await walk_pages(client, base, status="NEW", limit=2)
    assert pages == [waiting[0:2], waiting[2:3]]
    pages, _ = await walk_pages(client, base, status="success", limit=1)
    assert pages == [[i] for i in done]
    pages, _ = await walk_pages(client, base, status="failed", limit=2)
    assert pages == [[]]


async def test_a_page_of_no_tasks_is_refused(client: TestClient, base: str) -> None:
    """A page of limit 0 could only answer "page": null, as if the list ended there."""
    await submit(client, base, "echo", {}, delay=LATER)
    message = await assert_error(
        await client.get(f"{base}/tasks", params={"page": "", "limit": "0"}), 400
    )
    assert "limit" in message


async def test_a_page_token_that_was_not_given_out_is_refused(
    client: TestClient, base: str
) -> None:
    for token in ("not-a-token", "e30", "!!!"):
        message = await assert_error(await client.get(f"{base}/tasks", params={"page": token}), 400)
        assert token in message


# --- order and type ---


async def test_order_desc_lists_newest_first_and_asc_is_the_default(
    client: TestClient, base: str
) -> None:
    ids = [await submit(client, base, "echo", {}, delay=LATER) for _ in range(5)]
    assert ids_of(await list_tasks(client, base, order="desc")) == ids[::-1]
    assert ids_of(await list_tasks(client, base, order="desc", limit=2)) == [ids[4], ids[3]]
    assert ids_of(await list_tasks(client, base, order="asc")) == ids
    assert ids_of(await list_tasks(client, base)) == ids


async def test_pages_go_on_in_either_order(client: TestClient, base: str) -> None:
    ids = [await submit(client, base, "echo", {}, delay=LATER) for _ in range(5)]
    pages, _ = await walk_pages(client, base, order="desc", limit=2)
    assert pages == [[ids[4], ids[3]], [ids[2], ids[1]], [ids[0]]]
    pages, _ = await walk_pages(client, base, order="asc", limit=2)
    assert pages == [ids[0:2], ids[2:4], ids[4:5]]
    pages, _ = await walk_pages(client, base, order="desc", limit=-1)
    assert pages == [ids[::-1]]


async def test_a_page_token_does_not_change_order(client: TestClient, base: str) -> None:
    for _ in range(3):
        await submit(client, base, "echo", {}, delay=LATER)
    newest = await list_tasks(client, base, order="desc", limit=1, page="")
    oldest = await list_tasks(client, base, limit=1, page="")
    message = await assert_error(
        await client.get(f"{base}/tasks", params={"page": newest["page"], "limit": "1"}), 400
    )
    assert "order=desc" in message and newest["page"] in message
    message = await assert_error(
        await client.get(f"{base}/tasks", params={"page": oldest["page"], "order": "desc"}), 400
    )
    assert "order=asc" in message


async def test_type_filters_the_list_and_combines_with_status_order_and_pages(
    client: TestClient, base: str
) -> None:
    echoes = [await submit(client, base, "echo", {}, delay=LATER) for _ in range(3)]
    sleeps = [await submit(client, base, "sleep", {"seconds": 0}, delay=LATER) for _ in range(2)]
    done = await submit(client, base, "echo", {})
    await wait_status(client, base, done, "success")

    assert ids_of(await list_tasks(client, base, type="sleep")) == sleeps
    assert ids_of(await list_tasks(client, base, type="echo")) == [*echoes, done]
    assert ids_of(await list_tasks(client, base, type="echo", status="new")) == echoes
    assert ids_of(await list_tasks(client, base, type="sleep", status="success")) == []
    assert ids_of(await list_tasks(client, base, type="echo", order="desc", limit=2)) == [
        done,
        echoes[2],
    ]
    assert ids_of(await list_tasks(client, base, type="fail")) == []
    pages, _ = await walk_pages(client, base, type="echo", status="NEW", order="desc", limit=2)
    assert pages == [[echoes[2], echoes[1]], [echoes[0]]]


@pytest.mark.parametrize("bad", ["ASC", "newest", "", "asc,desc"])
async def test_a_bad_order_is_refused_with_the_valid_ones(
    client: TestClient, base: str, bad: str
) -> None:
    await assert_error(
        await client.get(f"{base}/tasks", params={"order": bad}),
        400,
        f"Invalid order '{bad}', valid orders are: asc, desc",
    )


async def test_a_type_that_is_not_registered_is_refused_with_the_registered_ones(
    client: TestClient, base: str
) -> None:
    message = await assert_error(await client.get(f"{base}/tasks", params={"type": "nope"}), 400)
    assert message.startswith("Invalid type 'nope', valid types are: ")
    assert {"echo", "fail", "gremlin", "sleep"} <= set(message.split(": ", 1)[1].split(", "))
    message = await assert_error(
        await client.get(f"{base}/tasks", params=[("type", "echo"), ("type", "sleep")]), 400
    )
    assert "'type' takes one job type" in message


async def test_order_and_type_are_refused_with_ids(client: TestClient, base: str) -> None:
    task_id = await submit(client, base, "echo", {}, delay=LATER)
    await assert_error(
        await client.get(f"{base}/tasks", params={"ids": str(task_id), "order": "desc"}),
        400,
        "Not support order when query task by ids, but got order='desc'",
    )
    await assert_error(
        await client.get(f"{base}/tasks", params={"ids": str(task_id), "type": "echo"}),
        400,
        "Not support type when query task by ids, but got type='echo'",
    )


# --- get ---


async def test_get_one_task(client: TestClient, base: str) -> None:
    task_id = await submit(client, base, "echo", {"a": [1, 2]}, name="my echo")
    task = await wait_status(client, base, task_id, "success")
    assert_task_keys(task)
    assert list(task)[:11] == SEED_KEYS
    assert task["task_name"] == "my echo"
    assert task["task_type"] == "echo"
    assert task["task_callable"] == "service.jobs.echo.run"
    assert task["task_input"] == '{"a":[1,2]}'
    assert task["task_result"] == '{"a":[1,2]}'
    assert task["task_retries"] == 0


async def test_a_task_without_result_or_input_leaves_those_keys_out(
    client: TestClient, base: str
) -> None:
    task_id = await submit(client, base, "echo", None, delay=LATER)
    task = await get_task(client, base, task_id)
    assert "task_result" not in task and "task_input" not in task
    assert_task_keys(task)
    assert task["task_status"] == "new"


async def test_get_an_unknown_task_is_404(client: TestClient, base: str) -> None:
    await assert_error(
        await client.get(f"{base}/tasks/4242"), 404, "Can't find task with id '4242'"
    )


@pytest.mark.parametrize("bad", ["abc", "0", "-3", "1.5", "+5", "1_0", HUGE])
async def test_get_refuses_an_id_that_is_not_a_positive_integer(
    client: TestClient, base: str, bad: str
) -> None:
    message = await assert_error(await client.get(f"{base}/tasks/{bad}"), 400)
    assert f"'{bad}'" in message


# --- delete ---


async def test_delete_a_completed_task(client: TestClient, base: str) -> None:
    task_id = await submit(client, base, "fail", {"message": "boom"})
    await wait_status(client, base, task_id, "failed")
    response = await client.delete(f"{base}/tasks/{task_id}")
    assert response.status == 204
    assert await response.read() == b""
    await assert_error(await client.get(f"{base}/tasks/{task_id}"), 404)
    await assert_error(
        await client.delete(f"{base}/tasks/{task_id}"), 404, f"Can't find task with id '{task_id}'"
    )


async def test_delete_refuses_an_incomplete_task_without_force(
    client: TestClient, base: str
) -> None:
    task_id = await submit(client, base, "echo", {}, delay=LATER)
    for query in ({}, {"force": "false"}):
        await assert_error(
            await client.delete(f"{base}/tasks/{task_id}", params=query),
            400,
            f"Can't delete incomplete task '{task_id}' in status NEW, Please try to cancel the task first",
        )
    assert (await get_task(client, base, task_id))["task_status"] == "new"


async def test_delete_refuses_a_force_that_is_not_a_boolean(client: TestClient, base: str) -> None:
    task_id = await submit(client, base, "echo", {}, delay=LATER)
    message = await assert_error(
        await client.delete(f"{base}/tasks/{task_id}", params={"force": "maybe"}), 400
    )
    assert "force" in message
    assert (await get_task(client, base, task_id))["task_status"] == "new"


async def test_force_delete_of_a_waiting_task_means_it_never_runs(
    client: TestClient, base: str
) -> None:
    task_id = await submit(client, base, "echo", {}, delay=LATER)
    response = await client.delete(f"{base}/tasks/{task_id}", params={"force": "true"})
    assert response.status == 204 and await response.read() == b""
    await assert_error(await client.get(f"{base}/tasks/{task_id}"), 404)
    assert ids_of(await list_tasks(client, base, limit=-1)) == []


async def test_force_delete_of_a_running_task_is_for_good(
    client: TestClient, base: str, gates: Callable[[int], asyncio.Event]
) -> None:
    task_id = await submit(client, base, "gated", {})
    await wait_progress(client, base, task_id, 1)
    await assert_error(
        await client.delete(f"{base}/tasks/{task_id}"),
        400,
        f"Can't delete incomplete task '{task_id}' in status RUNNING, Please try to cancel the task first",
    )
    response = await client.delete(f"{base}/tasks/{task_id}", params={"force": "true"})
    assert response.status == 204

    # the job runs on and ends; its end does not bring the record back
    gates(task_id).set()
    await asyncio.wait_for(client.app[SUPERVISOR].drain(), 10)
    assert await client.app[STORE].get(None, task_id) is None
    await assert_error(await client.get(f"{base}/tasks/{task_id}"), 404)
    assert ids_of(await list_tasks(client, base, limit=-1)) == []


async def test_delete_an_unknown_task_is_404(client: TestClient, base: str) -> None:
    for query in ({}, {"force": "true"}):
        await assert_error(
            await client.delete(f"{base}/tasks/77", params=query),
            404,
            "Can't find task with id '77'",
        )


# --- PUT actions ---


def assert_action_body(body: dict[str, Any], task_id: int, status: str, cancelled: bool) -> None:
    """SPEC 4: the task as GET returns it, plus `cancelled` last."""
    assert list(body)[-1] == "cancelled"
    assert body["cancelled"] is cancelled
    assert body["id"] == task_id
    assert body["task_status"] == status
    assert_task_keys({k: v for k, v in body.items() if k != "cancelled"})


async def test_cancel_a_task_that_has_not_started(client: TestClient, base: str) -> None:
    task_id = await submit(client, base, "echo", {}, delay=LATER)
    body = await ok_json(await put_action(client, base, task_id, "cancel"), 202)
    assert_action_body(body, task_id, "cancelled", True)
    assert (await get_task(client, base, task_id))["task_status"] == "cancelled"


async def test_cancel_of_a_completed_task_is_refused(client: TestClient, base: str) -> None:
    task_id = await submit(client, base, "echo", {})
    await wait_status(client, base, task_id, "success")
    await assert_error(
        await put_action(client, base, task_id, "cancel"),
        400,
        f"Can't cancel task '{task_id}' which is completed or cancelling",
    )
    assert (await get_task(client, base, task_id))["task_status"] == "success"


async def test_cancel_of_a_failed_or_cancelled_task_is_refused(
    client: TestClient, base: str
) -> None:
    failed = await submit(client, base, "fail", {"message": "boom"})
    await wait_status(client, base, failed, "failed")
    cancelled = await submit(client, base, "echo", {}, delay=LATER)
    await ok_json(await put_action(client, base, cancelled, "cancel"), 202)
    for task_id, status in ((failed, "failed"), (cancelled, "cancelled")):
        await assert_error(
            await put_action(client, base, task_id, "cancel"),
            400,
            f"Can't cancel task '{task_id}' which is completed or cancelling",
        )
        assert (await get_task(client, base, task_id))["task_status"] == status


async def test_cancel_a_paused_task(client: TestClient, base: str) -> None:
    task_id = await submit(client, base, "echo", {}, delay=LATER)
    await ok_json(await put_action(client, base, task_id, "pause"), 202)
    body = await ok_json(await put_action(client, base, task_id, "cancel"), 202)
    assert_action_body(body, task_id, "cancelled", True)
    await assert_error(await put_action(client, base, task_id, "resume"), 400)


async def test_cancel_of_a_cancelling_task_is_refused(
    client: TestClient, base: str, gates: Callable[[int], asyncio.Event]
) -> None:
    task_id = await submit(client, base, "gated", {})
    await wait_progress(client, base, task_id, 1)

    body = await ok_json(await put_action(client, base, task_id, "cancel"), 202)
    assert_action_body(body, task_id, "cancelling", True)
    assert (await get_task(client, base, task_id))["task_status"] == "cancelling"
    await assert_error(
        await put_action(client, base, task_id, "cancel"),
        400,
        f"Can't cancel task '{task_id}' which is completed or cancelling",
    )
    await assert_error(
        await client.delete(f"{base}/tasks/{task_id}"),
        400,
        f"Can't delete incomplete task '{task_id}' in status CANCELLING, Please try to cancel the task first",
    )

    gates(task_id).set()
    task = await wait_status(client, base, task_id, "cancelled")
    assert task["task_progress"] == 1
    await assert_error(
        await put_action(client, base, task_id, "cancel"),
        400,
        f"Can't cancel task '{task_id}' which is completed or cancelling",
    )


async def test_pause_and_resume(client: TestClient, base: str) -> None:
    task_id = await submit(client, base, "echo", {"x": 1}, delay=LATER)

    body = await ok_json(await put_action(client, base, task_id, "pause"), 202)
    assert_action_body(body, task_id, "pending", False)
    assert (await get_task(client, base, task_id))["task_status"] == "pending"
    await assert_error(await put_action(client, base, task_id, "pause"), 400)

    body = await ok_json(await put_action(client, base, task_id, "resume"), 202)
    assert_action_body(body, task_id, "restoring", False)
    # a resumed task runs now, whatever delay it was submitted with
    task = await wait_status(client, base, task_id, "success")
    assert task["task_result"] == '{"x":1}'


async def test_pause_of_a_running_task_is_refused(
    client: TestClient, base: str, gates: Callable[[int], asyncio.Event]
) -> None:
    task_id = await submit(client, base, "gated", {})
    await wait_progress(client, base, task_id, 1)
    message = await assert_error(await put_action(client, base, task_id, "pause"), 400)
    assert "RUNNING" in message
    assert (await get_task(client, base, task_id))["task_status"] == "running"
    gates(task_id).set()
    task = await wait_status(client, base, task_id, "success")
    assert task["task_result"] == '"released"'


async def test_resume_of_a_task_that_is_not_pending_is_refused(
    client: TestClient, base: str
) -> None:
    task_id = await submit(client, base, "echo", {}, delay=LATER)
    message = await assert_error(await put_action(client, base, task_id, "resume"), 400)
    assert "NEW" in message
    assert (await get_task(client, base, task_id))["task_status"] == "new"


async def test_retry_a_failed_task(client: TestClient, base: str) -> None:
    task_id = await submit(client, base, "fail", {"message": "boom"})
    task = await wait_status(client, base, task_id, "failed")
    assert "boom" in task["task_result"]
    assert task["task_retries"] == 0

    body = await ok_json(await put_action(client, base, task_id, "retry"), 202)
    assert_action_body(body, task_id, "restoring", False)
    assert body["task_retries"] == 1

    async def failed_again() -> dict[str, Any] | None:
        task = await get_task(client, base, task_id)
        return task if task["task_status"] == "failed" and task["task_retries"] == 1 else None

    task = await wait_for(failed_again, what="the retried task to fail again")
    assert "boom" in task["task_result"]


async def test_retry_a_cancelled_task(client: TestClient, base: str) -> None:
    task_id = await submit(client, base, "echo", {"y": 2}, delay=LATER)
    await ok_json(await put_action(client, base, task_id, "cancel"), 202)
    body = await ok_json(await put_action(client, base, task_id, "retry"), 202)
    assert_action_body(body, task_id, "restoring", False)
    task = await wait_status(client, base, task_id, "success")
    assert task["task_retries"] == 1
    assert task["task_result"] == '{"y":2}'


async def test_retry_of_a_task_that_succeeded_is_refused(client: TestClient, base: str) -> None:
    task_id = await submit(client, base, "echo", {})
    await wait_status(client, base, task_id, "success")
    message = await assert_error(await put_action(client, base, task_id, "retry"), 400)
    assert "SUCCESS" in message


@pytest.mark.parametrize("action", ["stop", "CANCEL", "", "cancel "])
async def test_an_unknown_action_is_refused(client: TestClient, base: str, action: str) -> None:
    task_id = await submit(client, base, "echo", {}, delay=LATER)
    await assert_error(
        await put_action(client, base, task_id, action), 400, f"Not support action '{action}'"
    )
    assert (await get_task(client, base, task_id))["task_status"] == "new"


async def test_a_missing_action_is_refused(client: TestClient, base: str) -> None:
    task_id = await submit(client, base, "echo", {}, delay=LATER)
    message = await assert_error(await client.put(f"{base}/tasks/{task_id}"), 400)
    assert message.startswith("Not support action '")
    assert (await get_task(client, base, task_id))["task_status"] == "new"


@pytest.mark.parametrize("action", ["cancel", "pause", "resume", "retry"])
async def test_an_action_on_an_unknown_task_is_404(
    client: TestClient, base: str, action: str
) -> None:
    await assert_error(
        await put_action(client, base, 31337, action), 404, "Can't find task with id '31337'"
    )


# --- graphs: SPEC 1 ---


UNDECLARED = (
    "/graphs/nope",
    "/graphspaces/DEFAULT/graphs/nope",
    "/graphspaces/gs2/graphs/hugegraph",
    "/graphs/other",
)


@pytest.mark.parametrize("prefix", UNDECLARED)
async def test_an_undeclared_graph_is_404_on_every_route(client: TestClient, prefix: str) -> None:
    graph = prefix.rsplit("/", 1)[1]
    message = f"Graph '{graph}' does not exist"
    await assert_error(await client.get(f"{prefix}/tasks"), 404, message)
    await assert_error(await client.get(f"{prefix}/tasks", params={"ids": "1"}), 404, message)
    await assert_error(await client.get(f"{prefix}/tasks/1"), 404, message)
    await assert_error(await client.delete(f"{prefix}/tasks/1"), 404, message)
    await assert_error(
        await client.put(f"{prefix}/tasks/1", params={"action": "cancel"}), 404, message
    )
    await assert_error(await client.post(f"{prefix}/jobs/echo", json={}), 404, message)
    await assert_error(
        await client.post(f"{prefix}/jobs/gremlin", json={"gremlin": "g.V()"}), 404, message
    )
    assert ids_of(await list_tasks(client, "/graphs/hugegraph", limit=-1)) == []


async def test_the_two_address_shapes_of_default_are_one_graph(client: TestClient) -> None:
    old, new = "/graphs/hugegraph", "/graphspaces/DEFAULT/graphs/hugegraph"
    first = await submit(client, old, "echo", {}, delay=LATER)
    second = await submit(client, new, "echo", {}, delay=LATER)
    assert ids_of(await list_tasks(client, old)) == [first, second]
    assert ids_of(await list_tasks(client, new)) == [first, second]
    assert await get_task(client, old, second) == await get_task(client, new, second)


async def test_a_task_is_visible_only_under_its_own_graph(client: TestClient, base: str) -> None:
    mine = await submit(client, base, "echo", {}, delay=LATER)
    other_base = "/graphspaces/gs1/graphs/other"
    theirs = await submit(client, other_base, "echo", {}, delay=LATER)
    same_name = "/graphspaces/gs1/graphs/hugegraph"  # same graph name, another graphspace

    for elsewhere in (other_base, same_name):
        not_found = f"Can't find task with id '{mine}'"
        await assert_error(await client.get(f"{elsewhere}/tasks/{mine}"), 404, not_found)
        await assert_error(
            await client.delete(f"{elsewhere}/tasks/{mine}", params={"force": "true"}),
            404,
            not_found,
        )
        for action in ("cancel", "pause", "resume", "retry"):
            await assert_error(await put_action(client, elsewhere, mine, action), 404, not_found)
        assert mine not in ids_of(await list_tasks(client, elsewhere, limit=-1))
        assert (
            ids_of(await ok_json(await client.get(f"{elsewhere}/tasks", params={"ids": str(mine)})))
            == []
        )

    assert ids_of(await list_tasks(client, base, limit=-1)) == [mine]
    assert ids_of(await list_tasks(client, other_base, limit=-1)) == [theirs]
    assert (await get_task(client, base, mine))["task_status"] == "new"
    await assert_error(await client.get(f"{base}/tasks/{theirs}"), 404)


# --- unknown routes and methods: SPEC 6 ---


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/nope"),
        ("GET", "/graphs/hugegraph/tasks/1/nope"),
        ("GET", "/graphs/hugegraph/tasks/"),
        ("POST", "/graphs/hugegraph/jobs"),
        ("GET", "/graphspaces/DEFAULT/tasks"),
    ],
)
async def test_an_unknown_route_is_a_json_404(client: TestClient, method: str, path: str) -> None:
    message = await assert_error(await client.request(method, path), 404)
    assert path in message


@pytest.mark.parametrize(
    "method, path, allowed",
    [
        ("PATCH", "/graphs/hugegraph/tasks/1", "DELETE, GET, PUT"),
        ("POST", "/graphs/hugegraph/tasks", "GET"),
        ("DELETE", "/graphspaces/DEFAULT/graphs/hugegraph/tasks", "GET"),
        ("GET", "/graphs/hugegraph/jobs/gremlin", "POST"),
        ("PUT", "/versions", "GET"),
    ],
)
async def test_an_unknown_method_is_a_json_405(
    client: TestClient, method: str, path: str, allowed: str
) -> None:
    response = await client.request(method, path)
    message = await assert_error(response, 405)
    assert method in message and path in message
    assert sorted(response.headers["Allow"].replace(" ", "").split(",")) == allowed.replace(
        " ", ""
    ).split(",")

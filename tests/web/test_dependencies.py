"""Task dependencies (README, "Dependencies") end to end, on both stores (`db` is
`any_db`): HugeGraph's `task_dependencies`, a task not started until every dependency
succeeded, HugeGraph's results when one failed or was cancelled, a retry of that one
putting its dependants back, a force delete of an unfinished one, the submission's 400s,
`ctx.dependency_results`; a diamond, a chain of 200 and a fan-out and fan-in of 500."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.web import create_app
from tests.conftest import get_task, make_settings, submit, wait_for, wait_status
from tests.dep_jobs import DEPENDENCY_JOBS

BASE = "/graphs/hugegraph"
FAILED = "Failed due to dependent task '{}' failed"
CANCELLED = "Cancelled due to dependent task '{}' cancelled"


@pytest.fixture
def db(any_db: Path | str) -> Path | str:
    return any_db


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path, db: Path | str) -> TestClient:
    settings = make_settings(tmp_path, db, jobs=DEPENDENCY_JOBS, max_waiting=0)
    return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]


def after(*ids: int) -> str:
    return ",".join(map(str, ids))


async def put(client: TestClient, task_id: int, action: str) -> dict[str, Any]:
    response = await client.put(f"{BASE}/tasks/{task_id}", params={"action": action})
    assert response.status == 202, await response.text()
    return dict(await response.json())


async def statuses(client: TestClient, ids: list[int]) -> dict[int, dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    for at in range(0, len(ids), 200):
        chunk = ids[at : at + 200]
        response = await client.get(
            f"{BASE}/tasks", params=[("ids", str(i)) for i in chunk] + [("limit", "-1")]
        )
        assert response.status == 200
        found.update({t["id"]: t for t in (await response.json())["tasks"]})
    return found


async def wait_all(
    client: TestClient, ids: list[int], status: str, timeout: float = 60.0
) -> dict[int, dict[str, Any]]:
    async def probe() -> dict[int, dict[str, Any]] | None:
        found = await statuses(client, ids)
        done = all(found[i]["task_status"] == status for i in ids)
        return found if done else None

    return await wait_for(probe, timeout, f"{len(ids)} tasks to be {status}")


async def test_diamond_waits_then_runs_with_its_dependencies_results(
    client: TestClient, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    top = await submit(client, BASE, "gate", {"path": str(gate), "result": "top"})
    left = await submit(client, BASE, "results", {"value": "left"}, dependencies=top)
    right = await submit(client, BASE, "results", {"value": "right"}, dependencies=top)
    bottom = await submit(
        client, BASE, "results", {"value": "bottom"}, dependencies=after(left, right)
    )
    shown = await get_task(client, BASE, bottom)
    # HugeGraph's key after its eleven, and what it still waits for
    keys = list(shown)
    assert keys.index("task_dependencies") > keys.index("task_callable")
    assert shown["task_dependencies"] == [left, right]
    assert shown["task_status"] == "new"
    assert shown["task_dependencies_left"] == 2
    await wait_status(client, BASE, top, "running")
    assert (await get_task(client, BASE, left))["task_status"] == "new"
    gate.touch()
    done = await wait_status(client, BASE, bottom, "success", timeout=20)
    assert "task_dependencies_left" not in done
    assert eval_json(done["task_result"]) == {
        "value": "bottom",
        "dependencies": {
            str(left): {"value": "left", "dependencies": {str(top): "top"}},
            str(right): {"value": "right", "dependencies": {str(top): "top"}},
        },
    }
    # none of them started before what it waits for ended
    order = {t: (await get_task(client, BASE, t))["task_update"] for t in (top, left, right)}
    assert order[top] <= order[left] and order[top] <= order[right]


def eval_json(text: str) -> Any:
    import orjson

    return orjson.loads(text)


async def test_a_dependency_that_already_succeeded_holds_nothing(client: TestClient) -> None:
    first = await submit(client, BASE, "echo", {"n": 1})
    await wait_status(client, BASE, first, "success")
    second = await submit(client, BASE, "results", dependencies=first)
    done = await wait_status(client, BASE, second, "success")
    assert eval_json(done["task_result"])["dependencies"] == {str(first): {"n": 1}}


async def test_submission_refuses_unknown_other_graph_and_future_ids(client: TestClient) -> None:
    mine = await submit(client, BASE, "echo")
    other = await submit(client, "/graphspaces/gs1/graphs/other", "echo")
    for wanted in (str(mine + 1000), str(other), f"{mine},{mine + 1000}"):
        response = await client.post(f"{BASE}/jobs/echo", params={"dependencies": wanted})
        body = await response.json()
        assert response.status == 400, body
        named = wanted.split(",")[-1]
        assert body["message"].startswith(
            f"Can't find dependency task with id '{named}' in graph 'hugegraph'"
        ), body
    # the id it would get (the task itself: the only cycle a submission could write)
    response = await client.post(f"{BASE}/jobs/echo", params={"dependencies": str(other + 1)})
    assert response.status == 400
    assert f"'{other + 1}'" in (await response.json())["message"]
    for wrong in ("x", "0", "-3", "1,,2"):
        response = await client.post(f"{BASE}/jobs/echo", params={"dependencies": wrong})
        body = await response.json()
        assert response.status == 400, (wrong, body)
        assert "dependencies" in body["message"]
        assert body["exception"]


async def test_chain_of_200_with_a_failure_then_its_retry(client: TestClient) -> None:
    ids: list[int] = []
    for n in range(200):
        if n == 100:  # fails at its first run, succeeds when retried
            ids.append(await submit(client, BASE, "fail_first", dependencies=ids[-1]))
        else:
            query = {"dependencies": ids[-1]} if ids else {}
            ids.append(await submit(client, BASE, "echo", {"n": n}, **query))
    found = await wait_all(client, ids[101:], "failed")
    for n in range(101, 200):
        assert found[ids[n]]["task_result"] == FAILED.format(ids[n - 1])
    assert (await get_task(client, BASE, ids[100]))["task_status"] == "failed"
    assert all(found[ids[n]]["task_retries"] == 0 for n in range(101, 200))
    first = await statuses(client, ids[:100])
    assert all(t["task_status"] == "success" for t in first.values())
    # a dependant cannot be retried while what it waits for is failed: retry that one
    response = await client.put(f"{BASE}/tasks/{ids[150]}", params={"action": "retry"})
    assert response.status == 400
    assert f"dependency '{ids[149]}' is failed" in (await response.json())["message"]
    await put(client, ids[100], "retry")
    await wait_all(client, ids, "success")


async def test_fan_out_and_fan_in_of_500_with_a_cancel_in_the_middle(
    client: TestClient, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    root = await submit(client, BASE, "gate", {"path": str(gate), "result": 0})
    middle = [await submit(client, BASE, "echo", {"n": n}, dependencies=root) for n in range(500)]
    sink = await submit(client, BASE, "results", dependencies=after(*middle))
    waiting = await get_task(client, BASE, sink)
    assert waiting["task_dependencies_left"] == 500
    assert waiting["task_dependencies"] == middle
    await put(client, middle[250], "cancel")
    ended = await wait_status(client, BASE, sink, "cancelled")
    assert ended["task_result"] == CANCELLED.format(middle[250])
    gate.touch()
    others = [t for t in middle if t != middle[250]]
    await wait_all(client, others, "success")
    assert (await get_task(client, BASE, sink))["task_status"] == "cancelled"
    # the cancelled one's retry puts the sink back: it runs once that one succeeded
    await put(client, middle[250], "retry")
    done = await wait_status(client, BASE, sink, "success", timeout=30)
    results = eval_json(done["task_result"])["dependencies"]
    assert len(results) == 500
    assert results[str(middle[7])] == {"n": 7}


async def test_fan_in_of_500_with_a_failure_fails_the_sink(client: TestClient) -> None:
    middle = [await submit(client, BASE, "echo", {"n": n}) for n in range(250)]
    middle.append(await submit(client, BASE, "fail", {"message": "no"}))
    middle += [await submit(client, BASE, "echo", {"n": n}) for n in range(249)]
    sink = await submit(client, BASE, "echo", dependencies=after(*middle))
    next_one = await submit(client, BASE, "echo", dependencies=sink)
    ended = await wait_status(client, BASE, next_one, "failed", timeout=30)
    assert ended["task_result"] == FAILED.format(sink)
    sink_task = await get_task(client, BASE, sink)
    assert sink_task["task_status"] == "failed"
    assert sink_task["task_result"] == FAILED.format(middle[250])


async def test_dependant_of_an_ended_task_ends_at_once(client: TestClient) -> None:
    failed = await submit(client, BASE, "fail", {"message": "no"})
    await wait_status(client, BASE, failed, "failed")
    late = await submit(client, BASE, "echo", dependencies=failed)
    ended = await wait_status(client, BASE, late, "failed")
    assert ended["task_result"] == FAILED.format(failed)


async def test_pause_resume_and_cancel_of_a_waiting_task(
    client: TestClient, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    top = await submit(client, BASE, "gate", {"path": str(gate)})
    paused = await submit(client, BASE, "echo", dependencies=top)
    cancelled = await submit(client, BASE, "echo", dependencies=top)
    assert (await put(client, paused, "pause"))["task_status"] == "pending"
    resumed = await put(client, paused, "resume")
    assert resumed["task_status"] in ("restoring", "queued")
    await put(client, cancelled, "cancel")
    # a resumed task still waits: nothing runs it before its dependency succeeded
    shown = await get_task(client, BASE, paused)
    assert shown["task_status"] == "restoring" and shown["task_dependencies_left"] == 1
    gate.touch()
    await wait_status(client, BASE, paused, "success")
    assert (await get_task(client, BASE, cancelled))["task_status"] == "cancelled"


async def test_force_delete_of_an_unfinished_dependency_cancels_its_dependants(
    client: TestClient, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    top = await submit(client, BASE, "gate", {"path": str(gate)})
    below = await submit(client, BASE, "echo", dependencies=top)
    further = await submit(client, BASE, "echo", dependencies=below)
    await wait_status(client, BASE, top, "running")
    response = await client.delete(f"{BASE}/tasks/{top}", params={"force": "true"})
    assert response.status == 204
    ended = await wait_status(client, BASE, below, "cancelled")
    assert ended["task_result"] == f"Cancelled due to dependent task '{top}' deleted"
    ended = await wait_status(client, BASE, further, "cancelled")
    assert ended["task_result"] == CANCELLED.format(below)
    gate.touch()
    # a completed dependency's delete changes nothing of what it already let go
    done = await submit(client, BASE, "echo")
    await wait_status(client, BASE, done, "success")
    later = await submit(client, BASE, "echo", dependencies=done)
    await wait_status(client, BASE, later, "success")
    assert (await client.delete(f"{BASE}/tasks/{done}")).status == 204
    assert (await get_task(client, BASE, later))["task_dependencies"] == [done]


async def test_events_say_when_a_waiting_task_is_ready(client: TestClient, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    top = await submit(client, BASE, "gate", {"path": str(gate)})
    below = await submit(client, BASE, "echo", dependencies=top)
    response = await client.get(f"{BASE}/tasks/{below}/events")
    seen: list[dict[str, Any]] = []

    async def read() -> None:
        import orjson

        async for line in response.content:
            if line.startswith(b"data:"):
                seen.append(orjson.loads(line[5:]))
                if seen[-1]["task_status"] == "success":
                    return

    reader = asyncio.create_task(read())
    await wait_for(lambda: asyncio.sleep(0, seen), 10, "the first event")
    gate.touch()
    await asyncio.wait_for(reader, 20)
    response.close()
    ready = [e for e in seen if e["task_status"] == "new" and "task_dependencies_left" not in e]
    assert ready, seen
    assert seen[0]["task_dependencies_left"] == 1

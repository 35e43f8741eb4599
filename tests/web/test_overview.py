"""The read-only routes the dashboard reads (graphs, types, a graph's counts per status) and
the routes that serve the dashboard itself."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.config import Settings
from tests.conftest import make_settings, submit, wait_status
from tests.sup_util import execute

LIFECYCLE = [
    "new", "scheduling", "scheduled", "queued", "pending", "restoring", "running",
    "success", "cancelling", "cancelled", "failed", "unknown",
]  # fmt: skip
LATER = 3600


@pytest.fixture
def settings(tmp_path: Path, any_db: Path | str) -> Settings:
    """The `client` fixture's settings: on both stores (the counts are the store's)."""
    return make_settings(tmp_path, any_db)


async def ok_json(client: TestClient, path: str) -> Any:
    response = await client.get(path)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    return await response.json()


async def not_found(client: TestClient, path: str) -> str:
    response = await client.get(path)
    assert response.status == 404, await response.text()
    body = await response.json()
    assert body["exception"] == "NotFoundException"
    return str(body["message"])


# --- graphs and types ---


async def test_graphspaces_are_those_of_the_declared_graphs(client: TestClient) -> None:
    # config/test.toml declares DEFAULT/hugegraph, gs1/hugegraph and gs1/other
    assert await ok_json(client, "/graphspaces") == {"graphspaces": ["DEFAULT", "gs1"]}


async def test_graphs_of_a_graphspace(client: TestClient) -> None:
    assert await ok_json(client, "/graphspaces/gs1/graphs") == {"graphs": ["hugegraph", "other"]}
    assert await ok_json(client, "/graphspaces/DEFAULT/graphs") == {"graphs": ["hugegraph"]}
    # HugeGraph up to 1.5: /graphs lists graphspace DEFAULT's
    assert await ok_json(client, "/graphs") == {"graphs": ["hugegraph"]}


async def test_an_undeclared_graphspace_is_a_404(client: TestClient) -> None:
    assert await not_found(client, "/graphspaces/nope/graphs") == "Graphspace 'nope' does not exist"


async def test_default_exists_without_declared_graphs(aiohttp_client: Any, tmp_path: Path) -> None:
    """`/graphs/{graph}/…` always addresses DEFAULT, so DEFAULT is listed, with no graphs."""
    from service.web import create_app
    from tests.conftest import make_settings

    client = await aiohttp_client(create_app(make_settings(tmp_path, graphs=("gs1/only",))))
    assert await ok_json(client, "/graphspaces") == {"graphspaces": ["DEFAULT", "gs1"]}
    assert await ok_json(client, "/graphs") == {"graphs": []}
    assert await ok_json(client, "/graphspaces/DEFAULT/graphs") == {"graphs": []}
    assert await ok_json(client, "/graphspaces/gs1/graphs") == {"graphs": ["only"]}


async def test_types_are_the_registered_job_types(client: TestClient, base: str) -> None:
    types = (await ok_json(client, "/types"))["types"]
    assert {"sleep", "echo", "fail", "gremlin"} <= set(types)
    assert types == sorted(types)
    # each is a type a job can be submitted as; a name not listed is refused
    for name in ("echo", "sleep"):
        await submit(client, base, name, {"steps": 0} if name == "sleep" else {})
    response = await client.post(f"{base}/jobs/not-a-type", json={})
    assert response.status == 400
    assert "not-a-type" not in types


async def test_types_include_the_configured_ones(aiohttp_client: Any, tmp_path: Path) -> None:
    from service.web import create_app
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, jobs={"mine": "service.jobs.echo:run"})
    client = await aiohttp_client(create_app(settings))
    assert "mine" in (await ok_json(client, "/types"))["types"]


# --- counts per status ---


async def test_counts_of_an_empty_graph_list_every_status(client: TestClient, base: str) -> None:
    body = await ok_json(client, f"{base}/tasks/counts")
    assert list(body) == ["counts", "total"]
    assert list(body["counts"]) == LIFECYCLE
    assert set(body["counts"].values()) == {0}
    assert body["total"] == 0


async def test_counts_follow_the_graphs_tasks(client: TestClient, base: str) -> None:
    done = [await submit(client, base, "echo", {"n": n}) for n in range(3)]
    failed = await submit(client, base, "fail", {"message": "no"})
    waiting = await submit(client, base, "echo", {}, delay=LATER)
    paused = await submit(client, base, "echo", {}, delay=LATER)
    assert (await client.put(f"{base}/tasks/{paused}", params={"action": "pause"})).status == 202
    for task_id in done:
        await wait_status(client, base, task_id, "success")
    await wait_status(client, base, failed, "failed")
    await wait_status(client, base, waiting, "new")
    # a task of another graph is not counted here
    await submit(client, "/graphspaces/gs1/graphs/other", "echo", {}, delay=LATER)

    body = await ok_json(client, f"{base}/tasks/counts")
    expected = dict.fromkeys(LIFECYCLE, 0) | {"success": 3, "failed": 1, "new": 1, "pending": 1}
    assert body == {"counts": expected, "total": 6}

    assert (await client.delete(f"{base}/tasks/{done[0]}")).status == 204
    body = await ok_json(client, f"{base}/tasks/counts")
    assert body["counts"]["success"] == 2 and body["total"] == 5


async def test_a_status_this_version_cannot_read_is_counted_as_unknown(
    client: TestClient, base: str, settings: Settings
) -> None:
    task_id = await submit(client, base, "echo", {}, delay=LATER)
    execute(settings.db, "UPDATE tasks SET status = 'hibernating' WHERE id = ?", (task_id,))
    body = await ok_json(client, f"{base}/tasks/counts")
    assert body["counts"]["unknown"] == 1 and body["counts"]["new"] == 0
    assert body["total"] == 1


async def test_counts_of_an_undeclared_graph_are_a_404(client: TestClient, base: str) -> None:
    undeclared = base.replace("/hugegraph", "/nope")
    assert await not_found(client, f"{undeclared}/tasks/counts") == "Graph 'nope' does not exist"


async def test_counts_do_not_shadow_a_task(client: TestClient, base: str) -> None:
    task_id = await submit(client, base, "echo", {}, delay=LATER)
    assert (await ok_json(client, f"{base}/tasks/{task_id}"))["id"] == task_id
    # "counts" is no task id: other methods on the path are a 405 that allows GET only (so
    # the Allow header matches the document)
    response = await client.delete(f"{base}/tasks/counts")
    assert response.status == 405
    assert (await response.json())["message"].endswith("/tasks/counts; allowed: GET")


# --- the dashboard's page and files ---


async def test_the_root_leads_to_the_dashboard(client: TestClient) -> None:
    response = await client.get("/", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "ui"
    response = await client.get("/")
    assert response.status == 200
    assert str(response.url).endswith("/ui")


async def test_the_page_is_served_with_a_policy_that_allows_only_the_service(
    client: TestClient,
) -> None:
    response = await client.get("/ui")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "<title>sidetask</title>" in await response.text()


async def test_everything_the_page_loads_is_served(client: TestClient) -> None:
    """Every file the page and its modules refer to is shipped, with its content type."""
    page = await (await client.get("/ui")).text()
    wanted = set(re.findall(r'(?:src|href)="(ui/[^"]+)"', page))
    assert {"ui/app.js", "ui/style.css", "ui/favicon.svg"} <= wanted
    seen: set[str] = set()
    while wanted:
        path = wanted.pop()
        seen.add(path)
        response = await client.get(f"/{path}")
        assert response.status == 200, path
        kind = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}[
            path.rsplit(".", 1)[1]
        ]
        assert response.headers["Content-Type"].startswith(kind), path
        if path.endswith(".js"):
            imports = re.findall(r'from "\./([^"]+)"', await response.text())
            wanted |= {f"ui/{name}" for name in imports} - seen
    assert {"ui/api.js", "ui/format.js"} <= seen


async def test_a_file_the_dashboard_does_not_have_is_a_404(client: TestClient) -> None:
    for name in ("nope.js", "..%2Fui.py", "ui.py", "__init__.py"):
        response = await client.get(f"/ui/{name}")
        assert response.status == 404, name
        assert (await response.json())["exception"] == "NotFoundException"

"""/openapi.json describes every route of the app, each parameter, body and error response."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.web.keys import STORE, SUPERVISOR
from service.web.service_routes import sidetask_version
from tests.conftest import submit
from tests.web.test_tasks_api import LATER, ok_json

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
#: the two prefixes of SPEC 1, as the document writes them, by the address used in a test
PREFIX_TEMPLATES = {
    "/graphspaces/DEFAULT/graphs/hugegraph": "/graphspaces/{graphspace}/graphs/{graph}",
    "/graphs/hugegraph": "/graphs/{graph}",
}


async def fetch_document(client: TestClient) -> dict[str, Any]:
    return dict(await ok_json(await client.get("/openapi.json")))


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(METHOD, path) -> the operation, with the path item's parameters merged in."""
    found = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                merged = [*item.get("parameters", []), *operation.get("parameters", [])]
                found[(method.upper(), path)] = {**operation, "parameters": merged}
    return found


def app_routes(client: TestClient) -> set[tuple[str, str]]:
    routes = set()
    for route in client.app.router.routes():
        if route.method == "HEAD":  # aiohttp's automatic HEAD of a GET route
            continue
        routes.add((route.method, route.resource.canonical))
    return routes


async def test_the_document_is_served(client: TestClient) -> None:
    document = await fetch_document(client)
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "sidetask"
    assert document["info"]["version"] == sidetask_version()


async def test_every_route_of_the_app_is_described(client: TestClient) -> None:
    """Fails when a route is added without its description (or a description outlives its route)."""
    described = set(operations(await fetch_document(client)))
    routes = app_routes(client)
    assert routes, "the app has no routes"
    assert routes - described == set(), "routes the document does not describe"
    assert described - routes == set(), "the document describes routes the app does not have"


async def test_the_api_routes_are_all_there(client: TestClient) -> None:
    """The routes of SPEC 4, 5 and 8 under both prefixes (the check above needs them to exist)."""
    routes = app_routes(client)
    for prefix in PREFIX_TEMPLATES.values():
        for method, suffix in [
            ("GET", "/tasks"),
            ("GET", "/tasks/{id}"),
            ("DELETE", "/tasks/{id}"),
            ("PUT", "/tasks/{id}"),
            ("POST", "/jobs/gremlin"),
            ("POST", "/jobs/{type}"),
        ]:
            assert (method, prefix + suffix) in routes
    for path in ("/versions", "/health", "/ready", "/openapi.json"):
        assert ("GET", path) in routes


async def test_every_operation_declares_its_path_parameters(client: TestClient) -> None:
    for (method, path), operation in operations(await fetch_document(client)).items():
        in_path = set(re.findall(r"{(\w+)}", path))
        declared = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
        assert declared == in_path, f"{method} {path}"
        for parameter in operation["parameters"]:
            assert parameter["in"] in {"path", "query", "header"}, f"{method} {path}: {parameter}"
            assert "schema" in parameter, f"{method} {path}: {parameter['name']}"
            if parameter["in"] == "path":
                assert parameter["required"] is True, f"{method} {path}: {parameter['name']}"
        names = [(p["in"], p["name"]) for p in operation["parameters"]]
        assert len(names) == len(set(names)), f"{method} {path}: a parameter is declared twice"


SUBMIT_OPTIONS = {("query", n) for n in ("name", "priority", "max_retries", "timeout", "delay")} | {
    ("header", "Idempotency-Key")
}
#: a task's webhook (README, "Webhooks")
SUBMIT_OPTIONS |= {("query", "callback")}
#: the W3C trace context it is submitted under (README, "Traces")
SUBMIT_OPTIONS |= {("header", "traceparent"), ("header", "tracestate")}
#: the tasks it waits for (README, "Dependencies")
SUBMIT_OPTIONS |= {("query", "dependencies")}
#: when it may start, instead of a delay (README, "A walk-through with curl")
SUBMIT_OPTIONS |= {("query", "run_at")}
#: the list's name prefix and time ranges
LIST_SELECTION = ("name", "created_from", "created_to", "updated_from", "updated_to")
#: what each handler reads besides its path, by the path after the graph prefix
EXPECTED_PARAMETERS = {
    ("GET", "/tasks"): {
        ("query", name)
        for name in ("status", "limit", "ids", "page", "order", "type", *LIST_SELECTION)
    },
    ("GET", "/tasks/{id}"): set(),
    ("POST", "/tasks/bulk"): {
        ("query", name) for name in ("action", "status", "type", "force", "all", *LIST_SELECTION)
    },
    ("DELETE", "/tasks/{id}"): {("query", "force")},
    ("PUT", "/tasks/{id}"): {("query", "action")},
    ("POST", "/jobs/gremlin"): SUBMIT_OPTIONS,
    ("POST", "/jobs/{type}"): SUBMIT_OPTIONS,
}


async def test_the_task_api_operations_declare_their_query_parameters(client: TestClient) -> None:
    found = operations(await fetch_document(client))
    for prefix in PREFIX_TEMPLATES.values():
        for (method, suffix), expected in EXPECTED_PARAMETERS.items():
            operation = found[(method, prefix + suffix)]
            declared = {(p["in"], p["name"]) for p in operation["parameters"] if p["in"] != "path"}
            assert declared == expected, f"{method} {prefix}{suffix}"
    action = next(
        p
        for p in found[("PUT", "/graphs/{graph}/tasks/{id}")]["parameters"]
        if p["name"] == "action"
    )
    assert set(action["schema"]["enum"]) == {"cancel", "pause", "resume", "retry"}
    listing = {p["name"]: p for p in found[("GET", "/graphs/{graph}/tasks")]["parameters"]}
    assert listing["order"]["schema"] == {
        "type": "string",
        "enum": ["asc", "desc"],
        "default": "asc",
    }
    assert {"echo", "fail", "gremlin", "sleep"} <= set(listing["type"]["schema"]["enum"])
    # the graph stream takes the same types as the list (another is a 400)
    stream = {p["name"]: p for p in found[("GET", "/graphs/{graph}/events")]["parameters"]}
    assert stream["type"]["schema"] == listing["type"]["schema"]


#: operations that only ever redirect: `/` leads to the dashboard and answers nothing itself
REDIRECTS = {("GET", "/")}
#: what every operation may answer a request from a web page it does not serve: 421 for
#: its Host, 403 for its Origin (service.web.origin)
PAGE_REFUSALS = {"403", "421"}


async def test_every_operation_documents_its_responses(client: TestClient) -> None:
    document = await fetch_document(client)
    for (method, path), operation in operations(document).items():
        responses = operation["responses"]
        if (method, path) in REDIRECTS:
            assert set(responses) == {"302", *PAGE_REFUSALS}, f"{method} {path}"
        else:
            assert any(code.startswith("2") for code in responses), f"{method} {path}"
        for code, response in responses.items():
            assert response.get("description"), f"{method} {path} {code}"
            if code[0] in "45":
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, f"{method} {path} {code}"
        if path.startswith(tuple(PREFIX_TEMPLATES.values())):
            assert "404" in responses, f"{method} {path}: an undeclared graph is a 404"
        takes_input = any(p["in"] != "path" or p["name"] == "id" for p in operation["parameters"])
        if takes_input or "requestBody" in operation:
            assert "400" in responses, f"{method} {path}: bad input is a 400"
    posts = {path: op for (method, path), op in operations(document).items() if method == "POST"}
    for path, operation in posts.items():
        assert "application/json" in operation["requestBody"]["content"], path
        if path.endswith("/jobs/gremlin"):
            assert operation["requestBody"]["required"] is True


async def test_every_reference_resolves(client: TestClient) -> None:
    document = await fetch_document(client)
    schemas = document["components"]["schemas"]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                name = node["$ref"].removeprefix("#/components/schemas/")
                assert name in schemas, node["$ref"]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert set(schemas["Error"]["required"]) == {"exception", "message", "cause"}
    # the task's documented keys are the ones GET writes
    task_keys = set(schemas["Task"]["properties"])
    assert {
        "task_name", "task_progress", "task_create", "task_status", "task_update", "task_result",
        "task_retries", "id", "task_type", "task_callable", "task_input",
    } <= task_keys  # fmt: skip


# --- the errors the routes give are the ones the document lists ---

#: (method, path after the prefix, body, the documented path after the prefix, expected status)
ERROR_CASES: list[tuple[str, str, bytes | None, str, int]] = [
    ("GET", "/tasks?status=bogus", None, "/tasks", 400),
    ("GET", "/tasks?limit=x", None, "/tasks", 400),
    ("GET", "/tasks?ids=1&status=new", None, "/tasks", 400),
    ("GET", "/tasks?page=bad", None, "/tasks", 400),
    ("GET", "/tasks?name=", None, "/tasks", 400),
    ("GET", "/tasks?created_from=soon", None, "/tasks", 400),
    ("POST", "/tasks/bulk?action=cancel", None, "/tasks/bulk", 400),
    ("POST", "/tasks/bulk?action=bogus&all=true", None, "/tasks/bulk", 400),
    ("GET", "/tasks/abc", None, "/tasks/{id}", 400),
    ("GET", "/tasks/999", None, "/tasks/{id}", 404),
    ("DELETE", "/tasks/abc", None, "/tasks/{id}", 400),
    ("DELETE", "/tasks/{waiting}", None, "/tasks/{id}", 400),
    ("DELETE", "/tasks/{waiting}?force=maybe", None, "/tasks/{id}", 400),
    ("DELETE", "/tasks/999", None, "/tasks/{id}", 404),
    ("PUT", "/tasks/{waiting}?action=bogus", None, "/tasks/{id}", 400),
    ("PUT", "/tasks/{waiting}?action=resume", None, "/tasks/{id}", 400),
    ("PUT", "/tasks/999?action=cancel", None, "/tasks/{id}", 404),
    ("POST", "/jobs/gremlin", b"", "/jobs/gremlin", 400),
    ("POST", "/jobs/gremlin?priority=x", b'{"gremlin": "g.V()"}', "/jobs/gremlin", 400),
    ("POST", "/jobs/nope", b"{}", "/jobs/{type}", 400),
    ("POST", "/jobs/echo?delay=-1", b"{}", "/jobs/{type}", 400),
    ("POST", "/jobs/echo", b"[]", "/jobs/{type}", 400),
    ("GET", "/tasks/abc/events", None, "/tasks/{id}/events", 400),
    ("GET", "/tasks/999/events", None, "/tasks/{id}/events", 404),
    ("GET", "/tasks/abc/attempts", None, "/tasks/{id}/attempts", 400),
    ("GET", "/tasks/999/attempts", None, "/tasks/{id}/attempts", 404),
    ("GET", "/tasks/abc/deliveries", None, "/tasks/{id}/deliveries", 400),
    ("GET", "/tasks/999/deliveries", None, "/tasks/{id}/deliveries", 404),
    ("GET", "/tasks/abc/logs", None, "/tasks/{id}/logs", 400),
    ("GET", "/tasks/999/logs", None, "/tasks/{id}/logs", 404),
    ("GET", "/tasks/{waiting}/logs?level=loud", None, "/tasks/{id}/logs", 400),
    ("GET", "/tasks/{waiting}/logs?after=-1", None, "/tasks/{id}/logs", 400),
    ("GET", "/events?status=bogus", None, "/events", 400),
    # no error under a declared graph; the undeclared graph's 404 is checked below
    ("GET", "/tasks/counts", None, "/tasks/counts", 200),
    # an external worker's reports: a bad id, or no X-Lease header
    ("PUT", "/tasks/abc/progress", b"{}", "/tasks/{id}/progress", 400),
    ("POST", "/tasks/{waiting}/complete", b"{}", "/tasks/{id}/complete", 400),
    ("POST", "/tasks/{waiting}/fail", b"{}", "/tasks/{id}/fail", 400),
    # schedules
    ("GET", "/schedules", None, "/schedules", 200),
    ("POST", "/schedules", b'{"name": "x", "type": "echo"}', "/schedules", 400),
    ("GET", "/schedules/none", None, "/schedules/{name}", 404),
    ("PUT", "/schedules/none?action=stop", None, "/schedules/{name}", 400),
    ("DELETE", "/schedules/none", None, "/schedules/{name}", 404),
    ("POST", "/jobs/echo?run_at=tomorrow", b"{}", "/jobs/{type}", 400),
]


async def request_status(client: TestClient, method: str, url: str, body: bytes | None) -> int:
    response = await asyncio.wait_for(client.request(method, url, data=body), 10)
    status = response.status
    response.close()
    return status


async def test_each_error_a_route_gives_is_documented(client: TestClient, base: str) -> None:
    found = operations(await fetch_document(client))
    prefix = PREFIX_TEMPLATES[base]
    waiting = await submit(client, base, "echo", {}, delay=LATER)
    checked = set()
    for method, suffix, body, documented, expected in ERROR_CASES:
        url = base + suffix.replace("{waiting}", str(waiting))
        status = await request_status(client, method, url, body)
        assert status == expected, f"{method} {url}"
        assert str(status) in found[(method, prefix + documented)]["responses"], f"{method} {url}"
        checked.add((method, prefix + documented))
        # the same request under an undeclared graph
        undeclared = url.replace("/hugegraph", "/nope", 1)
        status = await request_status(client, method, undeclared, body)
        assert status == 404, f"{method} {undeclared}"
        assert "404" in found[(method, prefix + documented)]["responses"]

    # every operation under this prefix that documents an error has been made to give one
    with_errors = {
        key for key, op in found.items()
        if key[1].startswith(prefix + "/") and any(code[0] in "45" for code in op["responses"])
    }  # fmt: skip
    assert with_errors - checked == set(), "operations whose errors no case provokes"


async def test_a_store_that_cannot_answer_is_a_documented_503(
    client: TestClient, base: str
) -> None:
    found = operations(await fetch_document(client))
    prefix = PREFIX_TEMPLATES[base]
    waiting = await submit(client, base, "echo", {}, delay=LATER)
    await asyncio.wait_for(client.app[SUPERVISOR].drain(), 10)
    await asyncio.wait_for(client.app[STORE].close(), 10)

    for method, suffix, body, documented in [
        ("GET", "/tasks", None, "/tasks"),
        ("GET", f"/tasks?ids={waiting}", None, "/tasks"),
        ("GET", f"/tasks/{waiting}", None, "/tasks/{id}"),
        ("DELETE", f"/tasks/{waiting}?force=true", None, "/tasks/{id}"),
        ("PUT", f"/tasks/{waiting}?action=cancel", None, "/tasks/{id}"),
        ("POST", "/jobs/gremlin", b'{"gremlin": "g.V()"}', "/jobs/gremlin"),
        ("POST", "/jobs/echo", b"{}", "/jobs/{type}"),
        ("GET", f"/tasks/{waiting}/events", None, "/tasks/{id}/events"),
        ("GET", "/events", None, "/events"),
        ("GET", "/tasks/counts", None, "/tasks/counts"),
        ("POST", "/tasks/bulk?action=cancel&all=true", None, "/tasks/bulk"),
    ]:
        response = await asyncio.wait_for(client.request(method, base + suffix, data=body), 10)
        assert response.status == 503, f"{method} {base}{suffix}: {await response.text()}"
        body_json = await response.json(content_type=None)
        assert body_json["exception"] == "ServiceUnavailableException"
        assert "503" in found[(method, prefix + documented)]["responses"], (
            f"{method} {prefix}{documented}"
        )

    response = await client.get("/ready")
    assert response.status == 503
    assert "503" in found[("GET", "/ready")]["responses"]


@pytest.mark.parametrize("path", ["/versions", "/health", "/openapi.json"])
async def test_service_routes_need_no_error_responses(client: TestClient, path: str) -> None:
    found = operations(await fetch_document(client))
    assert set(found[("GET", path)]["responses"]) == {"200", *PAGE_REFUSALS}


async def test_the_job_routes_document_the_idempotency_replay_and_conflict(
    client: TestClient,
) -> None:
    found = operations(await fetch_document(client))
    jobs = [(key, op) for key, op in found.items() if key[0] == "POST" and "/jobs/" in key[1]]
    assert len(jobs) == 4  # gremlin and {type}, under both prefixes
    for key, operation in jobs:
        responses = operation["responses"]
        assert "Idempotency-Key" in responses["422"]["description"], key
        assert responses["422"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }
        assert responses["201"]["headers"]["Idempotent-Replayed"]["schema"]["enum"] == ["true"], key

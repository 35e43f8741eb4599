"""Every query parameter a handler reads is declared in its operation of /openapi.json:
the handlers run with a `request.query` that notes each name asked of it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from multidict import MultiDictProxy

from service.web import create_app, declared
from tests.conftest import make_settings, submit
from tests.web.test_openapi import PREFIX_TEMPLATES, app_routes, fetch_document, operations
from tests.web.test_tasks_api import LATER

#: a run_at an hour ahead (epoch milliseconds)
LATER_AT = int(time.time() * 1000) + 3_600_000

#: (method, route) -> the query parameters its handler asked for
Reads = dict[tuple[str, str], set[str]]


class NotingQuery(Mapping[str, str]):
    """A request's query that notes every name asked of it, present or not."""

    def __init__(self, query: MultiDictProxy[str], names: set[str]) -> None:
        self._query = query
        self._names = names

    def __getitem__(self, name: str) -> str:
        self._names.add(name)
        return self._query[name]

    def __contains__(self, name: object) -> bool:
        self._names.add(str(name))
        return name in self._query

    def get(self, name: str, default: Any = None) -> Any:
        self._names.add(name)
        return self._query.get(name, default)

    def getall(self, name: str, default: Any = None) -> Any:
        self._names.add(name)
        return self._query.getall(name, default)

    def getone(self, name: str, default: Any = None) -> Any:
        self._names.add(name)
        return self._query.getone(name, default)

    def __iter__(self) -> Iterator[str]:
        raise AssertionError(
            "a handler walked the whole query: each name it reads must be declared"
        )

    def __len__(self) -> int:
        return len(self._query)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Reads:
    noted: Reads = {}
    real = web.BaseRequest.query

    def query(request: web.BaseRequest) -> NotingQuery:
        assert isinstance(request, web.Request)
        resource = request.match_info.route.resource
        route = (request.method, resource.canonical if resource is not None else request.path)
        return NotingQuery(real.__get__(request, type(request)), noted.setdefault(route, set()))

    monkeypatch.setattr(web.BaseRequest, "query", property(query))
    return noted


def undeclared(reads: Reads, document: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """The query parameters each route read that its operation does not declare."""
    found = operations(document)
    missing = {}
    for route, names in reads.items():
        declared_names = {p["name"] for p in found[route]["parameters"] if p["in"] == "query"}
        if names - declared_names:
            missing[route] = names - declared_names
    return missing


#: (method, path after the prefix, body, headers, the documented path after the prefix)
GRAPH_REQUESTS: list[tuple[str, str, bytes | None, dict[str, str], str]] = [
    ("GET", "/tasks?limit=5&order=desc&status=new&type=echo&page=", None, {}, "/tasks"),
    ("GET", "/tasks?ids={waiting}", None, {}, "/tasks"),
    (
        "GET",
        "/tasks?name=n&created_from=0&created_to=2026-12-01&updated_from=0&updated_to=1",
        None,
        {},
        "/tasks",
    ),
    ("GET", "/tasks/counts", None, {}, "/tasks/counts"),
    (
        "POST",
        "/tasks/bulk?action=delete&status=success&type=echo&name=n&created_from=0"
        "&created_to=2026-12-01T00:00:00Z&updated_from=0&updated_to=9999999999999&force=false",
        None,
        {},
        "/tasks/bulk",
    ),
    ("GET", "/tasks/{waiting}", None, {}, "/tasks/{id}"),
    ("GET", "/tasks/{waiting}/logs?after=0&limit=5&level=info", None, {}, "/tasks/{id}/logs"),
    ("GET", "/tasks/{waiting}/attempts", None, {}, "/tasks/{id}/attempts"),
    ("GET", "/tasks/{waiting}/deliveries", None, {}, "/tasks/{id}/deliveries"),
    ("PUT", "/tasks/{waiting}?action=pause", None, {}, "/tasks/{id}"),
    ("DELETE", "/tasks/{waiting}?force=true", None, {}, "/tasks/{id}"),
    (
        "POST",
        f"/jobs/gremlin?name=n&priority=1&max_retries=1&timeout=5&delay={LATER}",
        b'{"gremlin": "g.V()"}',
        {"Idempotency-Key": "k1"},
        "/jobs/gremlin",
    ),
    ("POST", f"/jobs/resize?delay={LATER}", b"{}", {}, "/jobs/{type}"),
    ("GET", "/tasks/{other}/events?last_event_id=0", None, {}, "/tasks/{id}/events"),
    ("GET", "/events?status=new&type=echo", None, {"Last-Event-ID": "0"}, "/events"),
    (
        "POST",
        "/schedules",
        b'{"name": "tick", "type": "echo", "every": 60}',
        {},
        "/schedules",
    ),
    ("GET", "/schedules", None, {}, "/schedules"),
    ("GET", "/schedules/tick", None, {}, "/schedules/{name}"),
    ("PUT", "/schedules/tick?action=pause", None, {}, "/schedules/{name}"),
    ("DELETE", "/schedules/tick", None, {}, "/schedules/{name}"),
    ("POST", f"/jobs/echo?run_at={LATER_AT}", b"{}", {}, "/jobs/{type}"),
    ("POST", "/jobs/echo?dependencies={waiting}", b"{}", {}, "/jobs/{type}"),
    (
        "PUT",
        "/tasks/{other}/progress",
        b'{"progress": 1}',
        {"X-Lease": "no"},
        "/tasks/{id}/progress",
    ),
    (
        "POST",
        "/tasks/{other}/complete",
        b'{"result": 1}',
        {"X-Lease": "no"},
        "/tasks/{id}/complete",
    ),
    ("POST", "/tasks/{other}/fail", b'{"error": "e"}', {"X-Lease": "no"}, "/tasks/{id}/fail"),
]
#: (method, path, the documented path)
SERVICE_REQUESTS: list[tuple[str, str, str]] = [
    ("POST", "/workers/w1/claim?types=resize&wait=0", "/workers/{worker}/claim"),
    ("PUT", "/types/echo?action=resume", "/types/{type}"),
    ("GET", "/events?last_event_id=0", "/events"),
    ("GET", "/graphspaces/DEFAULT/graphs", "/graphspaces/{graphspace}/graphs"),
    ("GET", "/ui/app.js", "/ui/{asset}"),
    ("GET", "/docs/init.js", "/docs/{asset}"),
    *[
        ("GET", path, path)
        for path in (
            "/versions", "/health", "/ready", "/openapi.json", "/metrics", "/graphspaces",
            "/graphs", "/types", "/actions", "/", "/ui", "/docs",
        )
    ],
]  # fmt: skip


async def touch(
    client: TestClient, method: str, url: str, body: bytes | None, headers: dict[str, str]
) -> None:
    """Makes the request; a stream is left once its headers came (the handler has read its query)."""
    response = await asyncio.wait_for(
        client.request(method, url, data=body, headers=headers, allow_redirects=False), 10
    )
    response.close()


async def test_every_query_parameter_a_handler_reads_is_declared(
    aiohttp_client: Any, tmp_path: Path, reads: Reads
) -> None:
    client = await aiohttp_client(create_app(make_settings(tmp_path, external_types=("resize",))))
    document = await asyncio.wait_for(fetch_document(client), 10)
    requested = set()
    for base, prefix in PREFIX_TEMPLATES.items():
        waiting = await asyncio.wait_for(submit(client, base, "echo", {}, delay=LATER), 10)
        other = await asyncio.wait_for(submit(client, base, "echo", {}, delay=LATER), 10)
        for method, suffix, body, headers, documented in GRAPH_REQUESTS:
            url = base + suffix.format(waiting=waiting, other=other)
            await touch(client, method, url, body, headers)
            requested.add((method, prefix + documented))
    for method, path, documented in SERVICE_REQUESTS:
        await touch(client, method, path, b"" if method == "POST" else None, {})
        requested.add((method, documented))
    assert app_routes(client) - requested == set(), (
        "routes this test does not make read their query"
    )
    # the handlers that take a query were reached and read it
    assert {"limit", "ids", "order", "status", "type", "page"} <= reads[
        ("GET", "/graphs/{graph}/tasks")
    ]
    assert {"after", "limit", "level"} <= reads[("GET", "/graphs/{graph}/tasks/{id}/logs")]
    selection = {"name", "created_from", "created_to", "updated_from", "updated_to"}
    assert selection <= reads[("GET", "/graphs/{graph}/tasks")]
    assert {"action", "status", "type", "force", "all", *selection} <= reads[
        ("POST", "/graphs/{graph}/tasks/bulk")
    ]
    assert {"types", "wait"} <= reads[("POST", "/workers/{worker}/claim")]
    assert "name" in reads[("POST", "/graphs/{graph}/jobs/gremlin")]
    assert "dependencies" in reads[("POST", "/graphs/{graph}/jobs/{type}")]
    assert undeclared(reads, document) == {}


async def test_a_query_parameter_read_without_its_declaration_is_found(client: TestClient) -> None:
    """The check above fails for a handler that reads a name its operation does not declare."""
    document = await asyncio.wait_for(fetch_document(client), 10)
    reads: Reads = {
        ("GET", "/graphs/{graph}/tasks"): {"limit", "bogus"},
        ("GET", "/health"): {"verbose"},
    }
    assert undeclared(reads, document) == {
        ("GET", "/graphs/{graph}/tasks"): {"bogus"},
        ("GET", "/health"): {"verbose"},
    }


def test_every_declared_query_parameter_is_in_the_document() -> None:
    """A declaration in service.web.declared that no operation shows is a parse nobody documents."""
    from service.web.openapi import openapi_document

    shown = {
        (p["in"], p["name"])
        for operation in operations(openapi_document("0")).values()
        for p in operation["parameters"]
    }
    for name, value in vars(declared).items():
        if isinstance(value, declared.Param):
            assert (value.where, value.name) in shown, name


async def test_the_body_fields_the_document_lets_be_null_are_taken(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    """bindings, aliases and a report's progress may be null: the handlers take it (no
    bindings, no aliases, a heartbeat), and the document's schemas say so."""
    client = await aiohttp_client(create_app(make_settings(tmp_path, external_types=("resize",))))
    schemas = (await asyncio.wait_for(fetch_document(client), 10))["components"]["schemas"]
    for schema, field in [("GremlinJob", "bindings"), ("GremlinJob", "aliases")]:
        assert "null" in schemas[schema]["properties"][field]["type"], (schema, field)
    for schema in ("ProgressReport", "Completion", "Failure"):
        assert "null" in schemas[schema]["properties"]["progress"]["type"], schema

    body = b'{"gremlin": "g.V()", "bindings": null, "aliases": null}'
    response = await asyncio.wait_for(
        client.post(f"/graphs/hugegraph/jobs/gremlin?delay={LATER}", data=body), 10
    )
    assert response.status == 201, await response.text()

    await asyncio.wait_for(submit(client, "/graphs/hugegraph", "resize", {}), 10)
    response = await asyncio.wait_for(client.post("/workers/w1/claim", params={"wait": "5"}), 15)
    assert response.status == 200, await response.text()
    work = await response.json()
    lease = {"X-Lease": work["lease"]}
    for path, method in [("/progress", "PUT"), ("/complete", "POST")]:
        response = await asyncio.wait_for(
            client.request(
                method, work["task_url"] + path, data=b'{"progress": null}', headers=lease
            ),
            10,
        )
        assert response.status == 200, (path, await response.text())

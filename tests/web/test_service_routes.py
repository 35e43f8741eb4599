"""Service routes (SPEC 8): /versions, /health, /ready."""

from __future__ import annotations

import asyncio
from importlib import metadata

from aiohttp.test_utils import TestClient

from service.web.keys import SUPERVISOR
from tests.web.test_tasks_api import JSON_TYPE, assert_error, ok_json


async def test_versions_is_hugegraphs_document_with_sidetasks_version(client: TestClient) -> None:
    response = await client.get("/versions")
    raw = await response.read()
    assert response.status == 200
    assert response.headers["Content-Type"] == JSON_TYPE
    version = metadata.version("sidetask")
    expected = (
        '{"versions":{"version":"v1","core":"1.7.0","gremlin":"3.5.1","api":"0.71",'
        f'"sidetask":"{version}"}}}}'
    )
    assert raw.decode() == expected


async def test_versions_needs_no_authentication(client: TestClient) -> None:
    response = await client.get("/versions", headers={"Authorization": "Basic bm9ib2R5Ondyb25n"})
    assert (await ok_json(response))["versions"]["core"] == "1.7.0"


async def test_health(client: TestClient) -> None:
    assert await ok_json(await client.get("/health")) == {"status": "ok"}


async def test_ready_while_serving_and_not_once_drained(client: TestClient) -> None:
    assert await ok_json(await client.get("/ready")) == {"status": "ready"}

    await asyncio.wait_for(client.app[SUPERVISOR].drain(), 10)
    message = await assert_error(await client.get("/ready"), 503)
    assert "supervisor" in message
    # alive all the same: health says the process answers, ready says it does work
    assert await ok_json(await client.get("/health")) == {"status": "ok"}

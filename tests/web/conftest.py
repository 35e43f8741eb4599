"""Fixtures of the end-to-end tests: a supervisor-and-store server (`db`, `start`) and a
plain server for the client and the command (`server`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from service.web import create_app
from tests.conftest import make_settings
from tests.sup_jobs import JOBS
from tests.sup_util import Start


@pytest.fixture
def db(tmp_path: Path) -> Path | str:
    """The test's database file (the one `start` serves)."""
    return tmp_path / "sidetask.db"


@pytest.fixture
def start(aiohttp_client: Any, tmp_path: Path, db: Path | str) -> Start:
    """A server on the test database (`db`: a module may make it `any_db`, for both
    stores) with the helper jobs registered; settings overridable."""

    async def start(**overrides: Any) -> TestClient:
        settings = make_settings(tmp_path, db, jobs=JOBS, **overrides)
        return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]

    return start


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[TestServer]:
    """A real server on loopback for the client's and the command's tests; a short
    reconnection delay suggested by the server keeps their reconnection tests quick."""
    server = TestServer(create_app(make_settings(tmp_path, sse_retry_ms=20)), host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()

"""Fixtures of the end-to-end tests of the supervisor and the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.web import create_app
from tests.conftest import make_settings
from tests.sup_jobs import JOBS
from tests.sup_util import Start


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """The test's database file (the one `start` serves)."""
    return tmp_path / "sidetask.db"


@pytest.fixture
def start(aiohttp_client: Any, tmp_path: Path) -> Start:
    """A server on the test database with the helper jobs registered; settings overridable."""

    async def start(**overrides: Any) -> TestClient:
        settings = make_settings(tmp_path, jobs=JOBS, **overrides)
        return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]

    return start

"""A type's rate limit holds across the replicas of one PostgreSQL database: the claims of
every replica are counted under the claims' lock in one window of the database's clock, so
two replicas with room for many claim no more between them than the limit allows."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from service.web import create_app
from tests.conftest import make_settings, submit, wait_status
from tests.sup_util import rows
from tests.web.test_rate_limits import claim_times

BASE = "/graphs/hugegraph"


async def replica(aiohttp_client: Any, tmp_path: Path, pg_dsn: str, name: str) -> TestClient:
    (tmp_path / name).mkdir()
    settings = make_settings(
        tmp_path / name, pg_dsn, server_name=name, concurrency=8, type_rate_limits={"echo": "4/s"}
    )
    return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]


async def test_a_rate_limit_holds_across_replicas(
    aiohttp_client: Any, tmp_path: Path, pg_dsn: str
) -> None:
    a = await replica(aiohttp_client, tmp_path, pg_dsn, "a")
    b = await replica(aiohttp_client, tmp_path, pg_dsn, "b")
    tasks = [await submit(client, BASE, "echo", {"n": n}) for n in range(8) for client in (a, b)]
    await asyncio.gather(*(wait_status(a, BASE, t, "success", timeout=30) for t in tasks))
    times = claim_times(pg_dsn, tasks, "scheduling")
    assert len(times) == 16  # each claimed once
    # sixteen at four a second, for the two replicas together: four windows at least, so
    # the last was claimed more than two seconds after the first (one replica alone would
    # have claimed all of them in its first step: 8 slots, prefetching 32)
    assert times[-1] - times[0] > 2000
    ((count,),) = rows(pg_dsn, "SELECT count FROM type_rates WHERE type = 'echo'")
    assert 1 <= int(count) <= 4
    servers = {s for (s,) in rows(pg_dsn, "SELECT DISTINCT server FROM tasks WHERE type = 'echo'")}
    assert servers <= {"a", "b"}

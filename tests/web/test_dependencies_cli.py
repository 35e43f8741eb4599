"""Dependencies through the sidetask command (`submit --after`) and the Python client
(`submit(…, dependencies=…)`, Task.dependencies / dependencies_left), against a real server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestServer

from service.client import APIError, Client
from tests.conftest import wait_for
from tests.web.test_cli import sidetask


@pytest.fixture
def url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def api(url: str) -> AsyncIterator[Client]:
    async with Client(url) as api:
        yield api


async def test_submit_after_waits_and_the_client_shows_it(url: str, api: Client) -> None:
    first = await api.submit("echo", {"a": 1}, delay=3600)  # held back: the others wait
    second = await api.submit("echo", {"b": 2})
    ran = await sidetask(
        "submit", "echo", "--after", str(first), str(second), "--url", url, "--json"
    )
    assert ran.code == 0, ran.err
    waiting = await api.get(ran.json()["task_id"])
    assert waiting.dependencies == (first, second)
    assert waiting.status == "new"
    shown = await sidetask("get", str(waiting.id), "--url", url)
    assert "task_dependencies" in shown.out and "task_dependencies_left" in shown.out

    async def counted_down() -> bool:
        return (await api.get(waiting.id)).dependencies_left == 1

    await wait_for(counted_down, 10, "the second dependency's success to count")
    await api.cancel(first)

    async def ended() -> bool:
        return (await api.get(waiting.id)).status == "cancelled"

    await wait_for(ended, 10, "the dependant to end")
    assert (await api.get(waiting.id)).result == (
        f"Cancelled due to dependent task '{first}' cancelled"
    )
    # the client's own option, and the 400 for an id of no task
    later = await api.submit("echo", dependencies=[second])
    assert (await api.get(later)).dependencies == (second,)
    with pytest.raises(APIError) as refused:
        await api.submit("echo", dependencies=[99999])
    assert refused.value.status == 400
    assert "Can't find dependency task with id '99999'" in refused.value.message
    bad = await sidetask("submit", "echo", "--after", "x", "--url", url)
    assert bad.code == 2 and "a task id is a positive integer" in bad.err

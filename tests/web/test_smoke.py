"""The service answers its basic routes on both address shapes."""

from __future__ import annotations

from typing import Any

from tests.conftest import HUGEGRAPH_KEYS, submit, wait_status


async def test_echo_runs_to_success(client: Any, base: str) -> None:
    task_id = await submit(client, base, "echo", {"hello": "world"})
    task = await wait_status(client, base, task_id, "success")
    assert task["task_result"] == '{"hello":"world"}'
    assert list(task)[:11] == HUGEGRAPH_KEYS

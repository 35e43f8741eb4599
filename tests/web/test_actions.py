"""GET /actions, the actions each status allows, and the API doing exactly those: every
action in every status, the task put there in its file."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.config import Settings
from tests.conftest import BASES, submit
from tests.web.test_overview import LIFECYCLE, ok_json

BASE = BASES[0]
LATER = 3600
#: what a person may do to a task in each status, written out here (not read from the code)
EXPECTED = {
    "new": ["cancel", "pause", "force_delete"],
    "scheduling": ["cancel", "pause", "force_delete"],
    "scheduled": ["cancel", "pause", "force_delete"],
    "queued": ["cancel", "pause", "force_delete"],
    "pending": ["cancel", "resume", "force_delete"],
    "restoring": ["cancel", "pause", "force_delete"],
    "running": ["cancel", "force_delete"],
    "success": ["delete"],
    "cancelling": ["force_delete"],
    "cancelled": ["retry", "delete"],
    "failed": ["retry", "delete"],
    "unknown": ["force_delete"],
}
ACTIONS = ["cancel", "pause", "resume", "retry", "delete", "force_delete"]


async def test_every_status_lists_its_actions(client: TestClient) -> None:
    body = await ok_json(client, "/actions")
    assert list(body) == ["actions", "requests"]
    # every status, in the counters' order
    assert list(body["actions"]) == LIFECYCLE
    assert body["actions"] == EXPECTED
    assert body["requests"] == {
        "cancel": "PUT {base}/tasks/{id}?action=cancel",
        "pause": "PUT {base}/tasks/{id}?action=pause",
        "resume": "PUT {base}/tasks/{id}?action=resume",
        "retry": "PUT {base}/tasks/{id}?action=retry",
        "delete": "DELETE {base}/tasks/{id}",
        "force_delete": "DELETE {base}/tasks/{id}?force=true",
    }


async def test_actions_are_in_the_openapi_document(client: TestClient) -> None:
    document = await ok_json(client, "/openapi.json")
    operation = document["paths"]["/actions"]["get"]
    assert operation["operationId"] == "listActions"
    schema = document["components"]["schemas"]["Actions"]
    assert set(schema["properties"]["actions"]["required"]) == set(LIFECYCLE)
    assert set(schema["properties"]["requests"]["required"]) == set(ACTIONS)


async def _act(client: TestClient, task_id: int, action: str) -> tuple[int, dict[str, Any]]:
    if action in ("delete", "force_delete"):
        params = {"force": "true"} if action == "force_delete" else {}
        response = await client.delete(f"{BASE}/tasks/{task_id}", params=params)
    else:
        response = await client.put(f"{BASE}/tasks/{task_id}", params={"action": action})
    body = {} if response.status == 204 else await response.json()
    return response.status, body


@pytest.mark.parametrize("status", LIFECYCLE)
async def test_the_api_allows_exactly_the_listed_actions(
    client: TestClient, settings: Settings, status: str
) -> None:
    """Each action on a task in `status` (a delayed task, so the scheduler leaves it alone,
    put in that status in its file): done when listed, a 400 saying why when not."""
    allowed = (await ok_json(client, "/actions"))["actions"][status]
    assert allowed == EXPECTED[status]
    for action in ACTIONS:
        task_id = await submit(client, BASE, "echo", {}, delay=LATER)
        written = "hibernating" if status == "unknown" else status
        with sqlite3.connect(settings.db) as conn:
            conn.execute("UPDATE tasks SET status = ? WHERE id = ?", (written, task_id))
        code, body = await _act(client, task_id, action)
        if action in allowed or (action == "force_delete" and "delete" in allowed):
            # force is listed only where a delete needs it; on a completed task it is harmless
            assert code in (202, 204), (status, action, body)
        else:
            assert code == 400, (status, action, body)
            assert body["exception"] == "IllegalArgumentException"
            assert body["message"].startswith("Can't"), body

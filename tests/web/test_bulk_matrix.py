"""Every bulk action on every status a user can meet agrees with the single action of
tests/web/test_action_matrix.py: where a single action is accepted, the bulk one changes
the task the same way (the same next status stored); where it is refused, the bulk one
counts it under the single refusal's message (its id left out) and changes nothing.
Each status is reached for real, by the action matrix's own steps, on both stores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import get_task, wait_status
from tests.sup_util import Start
from tests.web.test_action_matrix import (
    ACTIONS,
    BASE,
    REACH,
    SETTINGS,
    TABLE,
    World,
    last_event,
    task_events,
)

#: the single actions a bulk request takes (force_delete: action=delete&force=true)
BULK = [a for a in ACTIONS if a != "frobnicate"]
CELLS = [(status, action) for status in TABLE for action in BULK]


@pytest.fixture
def db(any_db: Path | str) -> Path | str:
    """Every cell on both stores."""
    return any_db


async def bulk(w: World, action: str, **terms: str) -> dict[str, Any]:
    query = (
        {"action": "delete", "force": "true"} if action == "force_delete" else {"action": action}
    )
    response = await w.client.post(f"{BASE}/tasks/bulk", params={**query, **terms})
    assert response.status == 200, await response.text()
    return dict(await response.json())


@pytest.mark.parametrize(("status", "action"), CELLS, ids=[f"{s}-{a}" for s, a in CELLS])
async def test_bulk_action_on_status(
    start: Start, tmp_path: Path, db: Path | str, status: str, action: str
) -> None:
    expect = TABLE[status][ACTIONS.index(action)]
    w = World(await start(**SETTINGS), db, tmp_path)
    try:
        task_id = await REACH[status](w)
        before = await get_task(w.client, BASE, task_id)
        events_before = last_event(db)
        # the subject is the only task of its name: the filter takes it alone
        answer = await bulk(w, action, name="the subject")
        assert answer["matched"] == 1, answer
        assert answer["action"] == ("delete" if action == "force_delete" else action)
        if expect.message is not None:
            name = before["task_status"].upper()
            message = expect.message.format(id=task_id, STATUS=name)
            assert answer["changed"] == 0, answer
            assert answer["refused"] == {message.replace(f" '{task_id}'", ""): 1}, answer
            assert await get_task(w.client, BASE, task_id) == before
            assert last_event(db) == events_before
        elif expect.code == 204:
            assert (answer["changed"], answer["refused"]) == (1, {}), answer
            assert (await w.client.get(f"{BASE}/tasks/{task_id}")).status == 404
            assert [e[1] for e in task_events(db, task_id, events_before)] == ["task.deleted"]
        else:
            assert (answer["changed"], answer["refused"]) == (1, {}), answer
            first = next(
                e for e in task_events(db, task_id, events_before) if e[1] == "task.status"
            )
            assert first[2] == expect.status
            after = await get_task(w.client, BASE, task_id)
            if action == "retry":
                assert after["task_retries"] == before["task_retries"] + 1
            if expect.status == "cancelling":  # the job is interrupted as a single cancel does
                w.release()
                await wait_status(w.client, BASE, task_id, "cancelled")
    finally:
        w.release()

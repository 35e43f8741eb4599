"""Every action on every status a user can meet, each status reached for real (as in
test_statuses.py): the answer of each cell is written out in TABLE, and the test checks it.

An accepted action: its status code, the status it leads to (in the answer and as the next
status stored), and the task keeps everything it was submitted with — name, input, type,
callable, priority, max_retries, timeout, graph, create time, description — and its result;
only retry changes `task_retries` (+ 1). A retried task keeps the error of its last run as
`task_result` until the new run ends (what `restoring` after an automatic retry shows too).
A refused action: the exact message (SPEC 4, service/supervisor.py), the task's id and
status named, and nothing changed (the same GET before and after, no event stored).

`scheduled` is held by an external worker's claim it has not confirmed; `scheduling`
cannot be held in one process (it lasts one commit), so it is written into the database:
on SQLite as a replica that claimed the task and stopped would leave it, on PostgreSQL
held by the serving replica (a row no live replica holds is recovered by the next sweep).

Every cell runs on both stores (`db` is `any_db`): a difference between them is a bug.
A damaged field is text in an integer column on SQLite; PostgreSQL's typed columns refuse
that, so there it is an input that is not JSON.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.supervisor import HAND_ON_PREFETCH, PREFETCH_PER_SLOT
from service.web.keys import STORE
from tests.conftest import get_task, submit, wait_status
from tests.sup_util import Start, execute, rows, stored_status, wait_file

BASE = "/graphs/hugegraph"
#: one slot (so a second task waits `queued` and a third `new`), a retry's backoff long
#: enough to be seen, and an external type for `scheduled`
SETTINGS: dict[str, Any] = {
    "concurrency": 1,
    "retry_backoff": 60.0,
    "retry_backoff_max": 60.0,
    "external_types": ("ext",),
}
#: what the task was submitted with, and what no action but its own may change
KEPT = (
    "task_name",
    "task_create",
    "task_type",
    "task_callable",
    "task_input",
    "task_priority",
    "task_max_retries",
    "task_timeout",
    "task_graphspace",
    "task_graph",
    "task_description",
    "task_result",
    "task_retries",
)


@dataclass
class World:
    """A server with the helper jobs, and the gate files that hold its jobs."""

    client: TestClient
    db: Path | str
    dir: Path
    gates: list[Path] = field(default_factory=list)

    def gate(self, name: str) -> Path:
        path = self.dir / name
        self.gates.append(path)
        return path

    def release(self) -> None:
        for path in self.gates:
            path.touch()

    async def subject(self, job_type: str, body: dict[str, Any], **options: Any) -> int:
        """The task the cell acts on, submitted with every option a user can give."""
        options = {
            "name": "the subject",
            "priority": 3,
            "timeout": 600,
            "max_retries": 0,
            **options,
        }
        return await submit(self.client, BASE, job_type, {"subject": True, **body}, **options)

    async def busy(self) -> None:
        """Fills the one slot with a job that waits for its gate."""
        task_id = await submit(self.client, BASE, "gate", {"path": str(self.gate("busy"))})
        await wait_status(self.client, BASE, task_id, "running")

    async def observe(self, task_id: int, status: str) -> None:
        await wait_status(self.client, BASE, task_id, status)
        assert stored_status(self.db, task_id) == status


Reach = Callable[[World], Awaitable[int]]


async def new(w: World) -> int:
    """Not delayed, but nothing can claim it: the slot is taken and the tasks claimed ahead
    of it wait queued (a slot's worth; on a store several replicas share, which hand a
    claimed task on in steps, more: service.supervisor's prefetch)."""
    await w.busy()
    ahead = PREFETCH_PER_SLOT + (HAND_ON_PREFETCH if isinstance(w.db, str) else 0)
    for n in range(ahead * SETTINGS["concurrency"] - 1):
        queued = await submit(w.client, BASE, "echo", {"queued": n})
        await w.observe(queued, "queued")
    task_id = await w.subject("echo", {})
    await w.observe(task_id, "new")
    return task_id


async def delayed_new(w: World) -> int:
    task_id = await w.subject("echo", {}, delay=3600)
    await w.observe(task_id, "new")
    return task_id


async def scheduling(w: World) -> int:
    task_id = await delayed_new(w)
    if isinstance(w.db, Path):
        execute(w.db, "UPDATE tasks SET status = 'scheduling' WHERE id = ?", (task_id,))
    else:  # claimed by this replica, which holds it
        owner = w.client.app[STORE].replica_id
        execute(
            w.db,
            "UPDATE tasks SET status = 'scheduling', owner = ?::uuid WHERE id = ?",
            (owner, task_id),
        )
    await w.observe(task_id, "scheduling")
    return task_id


async def scheduled(w: World) -> int:
    task_id = await w.subject("ext", {})
    response = await w.client.post("/workers/w1/claim", params={"types": "ext", "wait": "5"})
    assert response.status == 200, await response.text()
    assert (await response.json())["id"] == task_id
    await w.observe(task_id, "scheduled")
    return task_id


async def queued(w: World) -> int:
    await w.busy()
    task_id = await w.subject("echo", {})
    await w.observe(task_id, "queued")
    return task_id


async def pending(w: World) -> int:
    task_id = await delayed_new(w)
    await put(w, task_id, "pause", 202)
    await w.observe(task_id, "pending")
    return task_id


async def restoring(w: World) -> int:
    """Waiting for its retry's backoff after a failed run."""
    task_id = await w.subject("fail", {"message": "the first run broke"}, max_retries=2)
    await w.observe(task_id, "restoring")
    return task_id


async def running(w: World) -> int:
    task_id = await w.subject("gate", {"path": str(w.gate("run")), "result": "let go"})
    await w.observe(task_id, "running")
    return task_id


async def cancelling(w: World) -> int:
    """A job that ignores the cancel until its gate opens."""
    seen = w.dir / "cancel-seen"
    task_id = await w.subject(
        "stubborn", {"path": str(w.gate("stubborn")), "cancel_seen": str(seen)}
    )
    await w.observe(task_id, "running")
    await put(w, task_id, "cancel", 202)
    await wait_file(seen)
    await w.observe(task_id, "cancelling")
    return task_id


async def running_thread(w: World) -> int:
    """A plain function, run in a thread: nothing can interrupt it."""
    task_id = await w.subject("sync_gate", {"path": str(w.gate("thread"))})
    await w.observe(task_id, "running")
    return task_id


async def cancelling_thread(w: World) -> int:
    """A thread cannot be interrupted: the task stays `cancelling` until the function returns."""
    task_id = await running_thread(w)
    await put(w, task_id, "cancel", 202)
    await w.observe(task_id, "cancelling")
    return task_id


async def success(w: World) -> int:
    task_id = await w.subject("echo", {})
    await w.observe(task_id, "success")
    return task_id


async def failed(w: World) -> int:
    task_id = await w.subject("fail", {"message": "it broke"})
    await w.observe(task_id, "failed")
    return task_id


async def cancelled(w: World) -> int:
    task_id = await delayed_new(w)
    await put(w, task_id, "cancel", 202)
    await w.observe(task_id, "cancelled")
    return task_id


async def unknown(w: World) -> int:
    """A row damaged in the file: a status this version cannot interpret."""
    task_id = await delayed_new(w)
    execute(w.db, "UPDATE tasks SET status = 'hibernating' WHERE id = ?", (task_id,))
    assert (await get_task(w.client, BASE, task_id))["task_status"] == "unknown"
    return task_id


async def damaged(w: World, status: str) -> int:
    """A row whose status is known but a field is damaged (text where a number belongs;
    on PostgreSQL, whose columns are typed, an input that is not JSON): nothing of it can
    be trusted, so it shows as `unknown` too."""
    task_id = await (success(w) if status == "success" else delayed_new(w))
    if isinstance(w.db, Path):
        execute(w.db, "UPDATE tasks SET priority = 'high' WHERE id = ?", (task_id,))
    else:
        execute(w.db, "UPDATE tasks SET input = '{not json' WHERE id = ?", (task_id,))
    assert stored_status(w.db, task_id) == status
    assert (await get_task(w.client, BASE, task_id))["task_status"] == "unknown"
    return task_id


async def damaged_new(w: World) -> int:
    return await damaged(w, "new")


async def damaged_success(w: World) -> int:
    return await damaged(w, "success")


REACH: dict[str, Reach] = {
    "new": new,
    "delayed_new": delayed_new,
    "scheduling": scheduling,
    "scheduled": scheduled,
    "queued": queued,
    "pending": pending,
    "restoring": restoring,
    "running": running,
    "cancelling": cancelling,
    "running_thread": running_thread,
    "cancelling_thread": cancelling_thread,
    "success": success,
    "failed": failed,
    "cancelled": cancelled,
    "unknown": unknown,
    "damaged_new": damaged_new,
    "damaged_success": damaged_success,
}


@dataclass(frozen=True)
class Expect:
    code: int
    #: the status the answer shows (None: no body, or a refusal)
    status: str | None = None
    #: a refusal's message and cause; {id} and {STATUS} are filled in
    message: str | None = None
    cause: str = ""


def ok(status: str) -> Expect:
    return Expect(202, status)


#: the cause of every refusal the supervisor decides: the status it found
FOUND = "Task '{id}' is in status {STATUS}"


def no(message: str, cause: str = FOUND) -> Expect:
    return Expect(400, message=message, cause=cause)


DELETED = Expect(204)
CANCEL = no("Can't cancel task '{id}' which is completed or cancelling")
CANCEL_UNKNOWN = no("Can't cancel task '{id}' in status UNKNOWN")
PAUSE = no(
    "Can't pause task '{id}' in status {STATUS}, only a task that has not started running can be paused"
)
PAUSED = no("Can't pause task '{id}' in status PENDING, it is paused already")
RESUME = no("Can't resume task '{id}' in status {STATUS}, only a pending task can be resumed")
RETRY = no(
    "Can't retry task '{id}' in status {STATUS}, only a failed or cancelled task can be retried"
)
_DELETE = (
    "Can't delete incomplete task '{id}' in status {STATUS}, Please try to cancel the task first"
)
DELETE = no(_DELETE, "")
DELETE_UNKNOWN = no(
    _DELETE,
    "Its stored state cannot be interpreted, so it can't be cancelled: delete it with force=true",
)
UNSUPPORTED = no("Not support action 'frobnicate'", "")

ACTIONS = ("cancel", "pause", "resume", "retry", "delete", "force_delete", "frobnicate")
#: status -> the answer to each action of ACTIONS, in that order
TABLE: dict[str, tuple[Expect, ...]] = {
    #                     cancel            pause          resume           retry            delete          force    unknown
    "new":               (ok("cancelled"),  ok("pending"), RESUME,          RETRY,           DELETE,         DELETED, UNSUPPORTED),
    "delayed_new":       (ok("cancelled"),  ok("pending"), RESUME,          RETRY,           DELETE,         DELETED, UNSUPPORTED),
    "scheduling":        (ok("cancelled"),  ok("pending"), RESUME,          RETRY,           DELETE,         DELETED, UNSUPPORTED),
    "scheduled":         (ok("cancelled"),  ok("pending"), RESUME,          RETRY,           DELETE,         DELETED, UNSUPPORTED),
    "queued":            (ok("cancelled"),  ok("pending"), RESUME,          RETRY,           DELETE,         DELETED, UNSUPPORTED),
    "pending":           (ok("cancelled"),  PAUSED,        ok("restoring"), RETRY,           DELETE,         DELETED, UNSUPPORTED),
    "restoring":         (ok("cancelled"),  ok("pending"), RESUME,          RETRY,           DELETE,         DELETED, UNSUPPORTED),
    "running":           (ok("cancelling"), PAUSE,         RESUME,          RETRY,           DELETE,         DELETED, UNSUPPORTED),
    "cancelling":        (CANCEL,           PAUSE,         RESUME,          RETRY,           DELETE,         DELETED, UNSUPPORTED),
    "running_thread":    (ok("cancelling"), PAUSE,         RESUME,          RETRY,           DELETE,         DELETED, UNSUPPORTED),
    "cancelling_thread": (CANCEL,           PAUSE,         RESUME,          RETRY,           DELETE,         DELETED, UNSUPPORTED),
    "success":           (CANCEL,           PAUSE,         RESUME,          RETRY,           DELETED,        DELETED, UNSUPPORTED),
    "failed":            (CANCEL,           PAUSE,         RESUME,          ok("restoring"), DELETED,        DELETED, UNSUPPORTED),
    "cancelled":         (CANCEL,           PAUSE,         RESUME,          ok("restoring"), DELETED,        DELETED, UNSUPPORTED),
    "unknown":           (CANCEL_UNKNOWN,   PAUSE,         RESUME,          RETRY,           DELETE_UNKNOWN, DELETED, UNSUPPORTED),
    "damaged_new":       (CANCEL_UNKNOWN,   PAUSE,         RESUME,          RETRY,           DELETE_UNKNOWN, DELETED, UNSUPPORTED),
    "damaged_success":   (CANCEL_UNKNOWN,   PAUSE,         RESUME,          RETRY,           DELETE_UNKNOWN, DELETED, UNSUPPORTED),
}  # fmt: skip
#: the status each row's task shows, where its name says more
SHOWN = {
    "delayed_new": "new",
    "running_thread": "running",
    "cancelling_thread": "cancelling",
    "damaged_new": "unknown",
    "damaged_success": "unknown",
}
CELLS = [(status, action) for status in TABLE for action in ACTIONS]


@pytest.fixture
def db(any_db: Path | str) -> Path | str:
    """Every cell on both stores."""
    return any_db


async def put(w: World, task_id: int, action: str, code: int) -> dict[str, Any]:
    response = await w.client.put(f"{BASE}/tasks/{task_id}", params={"action": action})
    assert response.status == code, await response.text()
    return dict(await response.json())


async def act(w: World, task_id: int, action: str, base: str = BASE) -> tuple[int, Any]:
    """The action as a user sends it: (status code, decoded body or None)."""
    url = f"{base}/tasks/{task_id}"
    if action == "delete":
        response = await w.client.delete(url)
    elif action == "force_delete":
        response = await w.client.delete(url, params={"force": "true"})
    else:
        response = await w.client.put(url, params={"action": action})
    body = await response.read()
    return response.status, (await response.json() if body else None)


def task_events(db: Path | str, task_id: int, after: int = 0) -> list[tuple[int, str, str | None]]:
    return [
        (int(i), str(k), s)
        for i, k, s in rows(
            db,
            "SELECT id, kind, status FROM events WHERE task_id = ? AND id > ? ORDER BY id",
            (task_id, after),
        )
    ]


def last_event(db: Path | str) -> int:
    return int(rows(db, "SELECT COALESCE(MAX(id), 0) FROM events")[0][0])


def kept(task: dict[str, Any]) -> dict[str, Any]:
    return {key: task.get(key) for key in KEPT}


@pytest.mark.parametrize(("status", "action"), CELLS, ids=[f"{s}-{a}" for s, a in CELLS])
async def test_action_on_status(
    start: Start, tmp_path: Path, db: Path | str, status: str, action: str
) -> None:
    expect = TABLE[status][ACTIONS.index(action)]
    w = World(await start(**SETTINGS), db, tmp_path)
    try:
        task_id = await REACH[status](w)
        before = await get_task(w.client, BASE, task_id)
        assert before["task_name"] == "the subject"
        events_before = last_event(db)
        code, body = await act(w, task_id, action)
        assert code == expect.code, body
        if expect.message is not None:
            await check_refusal(w, task_id, before, events_before, expect, body)
        elif code == 204:
            await check_deleted(w, task_id, before, events_before)
        else:
            await check_accepted(w, task_id, before, events_before, action, expect, body)
    finally:
        w.release()


async def check_refusal(
    w: World, task_id: int, before: dict[str, Any], events_before: int, expect: Expect, body: Any
) -> None:
    name = before["task_status"].upper()
    assert expect.message is not None
    assert body["exception"] == "IllegalArgumentException"
    assert body["message"] == expect.message.format(id=task_id, STATUS=name)
    assert body["cause"] == expect.cause.format(id=task_id, STATUS=name)
    if "action" not in expect.message:  # an unknown action is what was wrong, not the task
        said = body["message"] + " " + body["cause"]
        assert f"'{task_id}'" in said and name in said, body
    assert await get_task(w.client, BASE, task_id) == before
    assert last_event(w.db) == events_before


async def check_deleted(w: World, task_id: int, before: dict[str, Any], events_before: int) -> None:
    response = await w.client.get(f"{BASE}/tasks/{task_id}")
    assert response.status == 404
    assert (await response.json())["message"] == f"Can't find task with id '{task_id}'"
    assert task_events(w.db, task_id, events_before) == [(events_before + 1, "task.deleted", None)]
    if before["task_status"] in ("running", "cancelling"):
        # the job runs on; its end does not bring the record back
        w.release()
        later = await submit(w.client, BASE, "echo", {"after": True})
        await wait_status(w.client, BASE, later, "success")  # one slot: the job has ended
        assert (await w.client.get(f"{BASE}/tasks/{task_id}")).status == 404
        assert task_events(w.db, task_id, events_before + 1) == []


async def check_accepted(
    w: World,
    task_id: int,
    before: dict[str, Any],
    events_before: int,
    action: str,
    expect: Expect,
    body: Any,
) -> None:
    assert body["task_status"] == expect.status
    assert body["cancelled"] is (expect.status in ("cancelling", "cancelled"))
    assert list(body)[-1] == "cancelled"
    answer = {k: v for k, v in body.items() if k != "cancelled"}
    wanted = kept(before)
    if action == "retry":
        wanted["task_retries"] += 1
    assert kept(answer) == wanted
    assert answer["task_update"] >= before["task_update"]
    # the next status stored is the one answered
    first = next(e for e in task_events(w.db, task_id, events_before) if e[1] == "task.status")
    assert first[2] == expect.status
    # what follows keeps it all too, to the task's next resting status
    ends = {"cancelling": ("cancelled",), "cancelled": ("cancelled",), "pending": ("pending",)}
    if action == "resume":
        ends["restoring"] = ("success",)
    else:  # a retried `fail` fails again; a retried cancelled `echo` succeeds
        ends["restoring"] = ("failed", "success")
    w.release()
    after = await wait_status(w.client, BASE, task_id, *ends[expect.status])
    if after["task_status"] == "success":
        wanted["task_result"] = after["task_result"]  # the new run's, once it has ended
    elif action == "retry":
        assert "it broke" in after["task_result"]  # the new run's error
        wanted["task_result"] = after["task_result"]
    assert kept(after) == wanted


async def test_get_actions_serves_what_the_walk_found(start: Start) -> None:
    """GET /actions (what a client offers) is what the API does: an action accepted in a
    status is listed for it; force_delete only where a plain delete is refused."""
    client = await start(**SETTINGS)
    response = await client.get("/actions")
    assert response.status == 200
    served = (await response.json())["actions"]
    for status, answers in TABLE.items():
        accepted = [a for a, e in zip(ACTIONS, answers, strict=True) if e.code in (202, 204)]
        if "delete" in accepted:
            accepted.remove("force_delete")
        assert served[SHOWN.get(status, status)] == accepted, status


@pytest.mark.parametrize("action", ACTIONS)
async def test_an_action_on_another_graphs_task_or_no_task_is_a_404(
    start: Start, tmp_path: Path, db: Path | str, action: str
) -> None:
    """Task 1 of one graph is no task of another (SPEC 1), and an id nobody has is no task:
    every action answers as GET does, and changes nothing. An unknown action is refused
    first, whatever the id."""
    w = World(await start(**SETTINGS), db, tmp_path)
    task_id = await delayed_new(w)
    before = await get_task(w.client, BASE, task_id)
    events_before = last_event(db)
    for base, missing in (("/graphspaces/gs1/graphs/other", task_id), (BASE, task_id + 100)):
        url = f"{base}/tasks/{missing}"
        if action == "delete":
            response = await w.client.delete(url)
        elif action == "force_delete":
            response = await w.client.delete(url, params={"force": "true"})
        else:
            response = await w.client.put(url, params={"action": action})
        body = await response.json()
        if action == "frobnicate":
            assert (response.status, body["message"]) == (400, "Not support action 'frobnicate'")
        else:
            assert (response.status, body["message"]) == (
                404,
                f"Can't find task with id '{missing}'",
            )
    assert await get_task(w.client, BASE, task_id) == before
    assert last_event(db) == events_before

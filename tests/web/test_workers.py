"""External workers over HTTP: claims and leases, progress, cancel through a report, retries,
lease expiry, a restart of the service (all on both stores); then real worker processes (the
Python library and the shell script with curl) against a real server."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession, web

from service import auth
from service.client import APIError
from service.web import create_app
from service.worker import Refused, Worker
from tests.conftest import ROOT, free_port, get_task, make_settings, submit, wait_for, wait_status
from tests.sup_util import execute, trail

BASE = "/graphs/hugegraph"
SPACE_BASE = "/graphspaces/DEFAULT/graphs/hugegraph"
TYPES = ("resize", "thumbnail")
#: a token granted one graph only
NARROW = "narrow-token-of-one-graph"


# --- the protocol, through the app on loopback ---


@pytest.fixture
def db(any_db: Path | str) -> Path | str:
    """The protocol's tests and the restarts run on both stores."""
    return any_db


def app_for(tmp_path: Path, db: Path | str, **overrides: Any) -> Any:
    options = {"external_types": TYPES, "lease_duration": 10.0, **overrides}
    return create_app(make_settings(tmp_path, db, **options))


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path, db: Path | str) -> Any:
    return await aiohttp_client(app_for(tmp_path, db))


async def claim(client: Any, worker: str = "w1", wait: float = 5, **query: str) -> dict[str, Any]:
    response = await asyncio.wait_for(
        client.post(f"/workers/{worker}/claim", params={"wait": str(wait), **query}), wait + 10
    )
    assert response.status == 200, await response.text()
    body = dict(await response.json())
    assert response.headers["X-Lease"] == body["lease"]
    return body


async def report(
    client: Any,
    work: dict[str, Any],
    path: str = "/progress",
    body: Any = None,
    lease: str | None = None,
    method: str | None = None,
) -> Any:
    headers = {"X-Lease": work["lease"] if lease is None else lease}
    method = method or ("PUT" if path == "/progress" else "POST")
    return await client.request(method, work["task_url"] + path, json=body or {}, headers=headers)


async def answer_of(response: Any, status: int = 200) -> dict[str, Any]:
    assert response.status == status, await response.text()
    return dict(await response.json())


async def test_no_work_is_a_204(client: Any) -> None:
    response = await client.post("/workers/w1/claim", params={"wait": "0"})
    assert response.status == 204
    response = await client.post("/workers/w1/claim", params={"types": "resize", "wait": "0.05"})
    assert response.status == 204


async def test_a_task_runs_through_a_worker_from_claim_to_success(
    client: Any, base: str, tmp_path: Path, db: Path | str
) -> None:
    # the claim waits for work; the task submitted meanwhile wakes it
    waiting = asyncio.ensure_future(claim(client, "resizer-1", wait=10, types="resize"))
    task_id = await submit(client, base, "resize", {"image": "cat.png"}, priority=3)
    work = await waiting
    assert (work["id"], work["type"], work["input"]) == (task_id, "resize", {"image": "cat.png"})
    assert work["task_url"] == f"{SPACE_BASE}/tasks/{task_id}"
    assert (work["graphspace"], work["graph"], work["retries"]) == ("DEFAULT", "hugegraph", 0)

    task = await get_task(client, base, task_id)
    assert (task["task_status"], task["task_server"]) == ("scheduled", "resizer-1")
    assert task["task_callable"] == "service.workers.external"

    first = await answer_of(await report(client, work, body={"progress": 40}))
    assert first["cancel"] is False
    assert (first["task_status"], first["task_progress"]) == ("running", 40)
    await answer_of(await report(client, work, body={"progress": 70}))
    assert (await get_task(client, base, task_id))["task_progress"] == 70

    done = await answer_of(
        await report(client, work, "/complete", {"result": {"size": [64, 64]}, "progress": 100})
    )
    assert (done["task_status"], done["task_result"], done["task_progress"]) == (
        "success",
        '{"size":[64,64]}',
        100,
    )
    assert trail(db, task_id) == [
        "new", "scheduled", "running", "success",
    ]  # fmt: skip


async def test_reports_work_under_both_prefixes_and_a_heartbeat_needs_no_body(client: Any) -> None:
    task_id = await submit(client, BASE, "resize", {})
    work = await claim(client)
    response = await client.put(
        f"{BASE}/tasks/{task_id}/progress", headers={"X-Lease": work["lease"]}
    )
    assert (await answer_of(response))["task_status"] == "running"
    response = await client.post(
        f"{BASE}/tasks/{task_id}/complete", headers={"X-Lease": work["lease"]}
    )
    assert (await answer_of(response))["task_result"] == "null"


async def test_a_claim_takes_the_highest_priority_then_the_oldest(client: Any) -> None:
    low = await submit(client, BASE, "resize", {"n": 1})
    high = await submit(client, BASE, "thumbnail", {"n": 2}, priority=5)
    later = await submit(client, BASE, "resize", {"n": 3})
    assert [(await claim(client))["id"] for _ in range(3)] == [high, low, later]


async def test_a_claim_takes_only_the_types_it_names(client: Any) -> None:
    await submit(client, BASE, "thumbnail", {})
    response = await client.post("/workers/w1/claim", params={"types": "resize", "wait": "0"})
    assert response.status == 204
    assert (await claim(client, types="resize,thumbnail"))["type"] == "thumbnail"


async def test_the_service_itself_never_runs_an_external_type(client: Any) -> None:
    external = await submit(client, BASE, "resize", {})
    echo = await submit(client, BASE, "echo", {"after": True})
    await wait_status(client, BASE, echo, "success")  # the supervisor had its chance
    assert (await get_task(client, BASE, external))["task_status"] == "new"


async def test_a_delayed_task_is_claimed_when_it_comes_due(client: Any) -> None:
    task_id = await submit(client, BASE, "resize", {}, delay=0.3)
    response = await client.post("/workers/w1/claim", params={"wait": "0"})
    assert response.status == 204
    assert (await claim(client, wait=10))["id"] == task_id


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            {"types": "echo"},
            "Job type(s) 'echo' not served by external workers; external types: resize, thumbnail",
        ),
        ({"types": "resize,nope"}, "'nope' not served"),
        ({"wait": "61"}, "The parameter 'wait' must be"),
        ({"wait": "soon"}, "The parameter 'wait' must be a number"),
    ],
)
async def test_a_bad_claim_is_a_400(client: Any, query: dict[str, str], message: str) -> None:
    response = await client.post("/workers/w1/claim", params=query)
    assert message in (await answer_of(response, 400))["message"]


async def test_a_bad_worker_name_is_a_400(client: Any) -> None:
    response = await client.post("/workers/-bad%20name/claim")
    assert "Invalid worker name" in (await answer_of(response, 400))["message"]


async def test_without_external_types_a_claim_is_a_400(
    aiohttp_client: Any, tmp_path: Path, db: Path | str
) -> None:
    client = await aiohttp_client(app_for(tmp_path, db, external_types=()))
    response = await client.post("/workers/w1/claim")
    assert (
        "declare some in the setting external_types" in (await answer_of(response, 400))["message"]
    )


async def test_only_the_holder_of_the_lease_reports(client: Any) -> None:
    task_id = await submit(client, BASE, "resize", {})
    work = await claim(client)
    response = await report(client, work, lease="someone-elses")
    assert (await answer_of(response, 409))["exception"] == "ConflictException"
    for path in ("/complete", "/fail"):
        await answer_of(await report(client, work, path, lease="someone-elses"), 409)
    response = await client.put(f"{BASE}/tasks/{task_id}/progress", json={"progress": 1})
    assert "X-Lease header is required" in (await answer_of(response, 400))["message"]
    # under another graph the task does not exist
    response = await client.put(
        f"/graphspaces/gs1/graphs/hugegraph/tasks/{task_id}/progress",
        headers={"X-Lease": work["lease"]},
    )
    await answer_of(response, 404)
    # the holder still holds it
    assert (await answer_of(await report(client, work)))["task_status"] == "running"


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/progress", {"progress": "half"}, "The field 'progress' must be an integer"),
        ("/progress", {"progress": True}, "The field 'progress' must be an integer"),
        ("/progress", [1], "The request body must be a JSON object"),
        ("/fail", {"error": 3}, "The field 'error' must be a string"),
        ("/fail", {"error": "x", "retry": "no"}, "The field 'retry' must be true or false"),
    ],
)
async def test_a_bad_report_is_a_400(client: Any, path: str, body: Any, message: str) -> None:
    await submit(client, BASE, "resize", {})
    work = await claim(client)
    response = await client.request(
        "PUT" if path == "/progress" else "POST", work["task_url"] + path,
        data=orjson.dumps(body), headers={"X-Lease": work["lease"]},
    )  # fmt: skip
    assert message in (await answer_of(response, 400))["message"]


# --- cancel ---


def deep_json(depth: int) -> bytes:
    """An array nested `depth` levels deep ([] is 1), as JSON text."""
    return b"[" * depth + b"]" * depth


async def test_results_and_inputs_nested_to_the_bound_pass_and_deeper_ones_are_a_400(
    client: Any,
) -> None:
    """One bound for every value: 254 levels. A worker's result beyond it is a 400 that
    leaves the task as it was, held by the worker, which can still end it."""
    task_id = await submit(client, BASE, "resize", {"a": orjson.loads(deep_json(253))})
    work = await claim(client)  # the claim's answer carries the input one level deeper
    assert work["input"] == {"a": orjson.loads(deep_json(253))}
    headers = {"X-Lease": work["lease"], "Content-Type": "application/json"}
    url = work["task_url"]
    for path, body, message in [
        ("/complete", b'{"result": ' + deep_json(255) + b"}", "The job's result is"),
        ("/complete", deep_json(2000), "The request body is"),
        ("/progress", deep_json(2000), "The request body is"),
        ("/fail", b'{"error": "x", "detail": ' + deep_json(2000) + b"}", "The request body is"),
    ]:
        method = "PUT" if path == "/progress" else "POST"
        answer = await answer_of(
            await client.request(method, url + path, data=body, headers=headers), 400
        )
        assert answer["message"] == f"{message} nested too deeply; at most 254 levels are allowed"
    assert (await get_task(client, BASE, task_id))["task_status"] == "scheduled"
    body = b'{"result": ' + deep_json(254) + b"}"
    done = await answer_of(await client.post(url + "/complete", data=body, headers=headers))
    assert (done["task_status"], done["task_result"]) == ("success", deep_json(254).decode())


async def test_a_claimed_task_not_yet_reported_is_cancelled_at_once(client: Any) -> None:
    task_id = await submit(client, BASE, "resize", {})
    work = await claim(client)
    response = await client.put(f"{BASE}/tasks/{task_id}", params={"action": "cancel"})
    assert (await answer_of(response, 202))["task_status"] == "cancelled"
    # the worker learns it from its first report, and its end is refused
    answer = await answer_of(await report(client, work, body={"progress": 1}))
    assert (answer["task_status"], answer["cancel"]) == ("cancelled", True)
    await answer_of(await report(client, work, "/complete", {"result": 1}), 409)
    assert (await get_task(client, BASE, task_id))["task_status"] == "cancelled"


async def test_a_cancel_reaches_the_worker_through_its_next_report(
    client: Any, tmp_path: Path, db: Path | str
) -> None:
    task_id = await submit(client, BASE, "resize", {})
    work = await claim(client)
    await answer_of(await report(client, work, body={"progress": 5}))
    response = await client.put(f"{BASE}/tasks/{task_id}", params={"action": "cancel"})
    cancelling = await answer_of(response, 202)
    assert (cancelling["task_status"], cancelling["cancelled"]) == ("cancelling", True)
    # no local job to interrupt: it stays cancelling until the worker acknowledges
    assert (await get_task(client, BASE, task_id))["task_status"] == "cancelling"
    answer = await answer_of(await report(client, work, body={"progress": 6}))
    assert (answer["task_status"], answer["cancel"], answer["task_progress"]) == (
        "cancelling",
        True,
        6,
    )
    # the worker stops and reports its end: the requested cancel wins
    ended = await answer_of(await report(client, work, "/fail", {"error": "stopped on request"}))
    assert (ended["task_status"], ended["task_progress"]) == ("cancelled", 6)
    assert trail(db, task_id)[-3:] == ["running", "cancelling", "cancelled"]


async def test_a_paused_claim_is_no_longer_the_workers(client: Any) -> None:
    task_id = await submit(client, BASE, "resize", {})
    work = await claim(client)
    response = await client.put(f"{BASE}/tasks/{task_id}", params={"action": "pause"})
    assert (await answer_of(response, 202))["task_status"] == "pending"
    answer = await answer_of(await report(client, work), 409)
    assert f"Task '{task_id}' is PENDING" in answer["message"]
    await answer_of(await client.put(f"{BASE}/tasks/{task_id}", params={"action": "resume"}), 202)
    again = await claim(client, "w2")
    assert again["id"] == task_id and again["lease"] != work["lease"]


# --- failures and retries ---


async def test_a_failure_is_retried_then_failed(
    aiohttp_client: Any, tmp_path: Path, db: Path | str
) -> None:
    client = await aiohttp_client(app_for(tmp_path, db))
    task_id = await submit(client, BASE, "resize", {}, max_retries=1)
    first = await claim(client)
    retried = await answer_of(await report(client, first, "/fail", {"error": "disk full"}))
    assert (retried["task_status"], retried["task_retries"], retried["task_result"]) == (
        "restoring",
        1,
        "disk full",
    )
    second = await claim(client, "w2", wait=10)  # after the retry's backoff
    assert (second["id"], second["retries"]) == (task_id, 1)
    await answer_of(await report(client, first), 409)  # the first lease is over
    failed = await answer_of(await report(client, second, "/fail", {"error": "disk still full"}))
    assert (failed["task_status"], failed["task_result"], failed["task_server"]) == (
        "failed",
        "disk still full",
        "w2",
    )


async def test_a_failure_without_retry_fails_at_once(client: Any) -> None:
    await submit(client, BASE, "resize", {}, max_retries=3)
    work = await claim(client)
    failed = await answer_of(
        await report(client, work, "/fail", {"error": "bad image", "retry": False})
    )
    assert (failed["task_status"], failed["task_retries"]) == ("failed", 0)


# --- leases ---


async def test_an_expired_lease_gives_the_task_back_with_a_retry(
    aiohttp_client: Any, tmp_path: Path, db: Path | str
) -> None:
    client = await aiohttp_client(app_for(tmp_path, db, lease_duration=1.0))
    task_id = await submit(client, BASE, "resize", {}, max_retries=1)
    work = await claim(client, "dies-1")
    await answer_of(await report(client, work, body={"progress": 2}))
    # the worker says nothing more: its lease runs out
    task = await wait_status(client, BASE, task_id, "restoring")
    assert task["task_retries"] == 1
    assert "The lease of worker 'dies-1'" in task["task_result"]
    answer = await answer_of(await report(client, work), 409)
    assert "not held by this lease" in answer["message"]
    again = await claim(client, "w2")
    assert (again["id"], again["retries"]) == (task_id, 1)
    await answer_of(await report(client, again, "/complete", {"result": "ok"}))
    assert trail(db, task_id) == [
        "new", "scheduled", "running", "restoring", "scheduled", "running", "success",
    ]  # fmt: skip


async def test_an_expired_lease_without_retries_fails_and_a_cancelling_one_is_cancelled(
    aiohttp_client: Any, tmp_path: Path, db: Path | str
) -> None:
    client = await aiohttp_client(app_for(tmp_path, db, lease_duration=1.0))
    last = await submit(client, BASE, "resize", {})
    (await claim(client, "dies-1"))
    cancelled = await submit(client, BASE, "resize", {})
    work = await claim(client, "dies-2")
    await answer_of(await report(client, work))
    await answer_of(await client.put(f"{BASE}/tasks/{cancelled}", params={"action": "cancel"}), 202)
    failed = await wait_status(client, BASE, last, "failed")
    assert "with no retries left" in failed["task_result"]
    await wait_status(client, BASE, cancelled, "cancelled")


async def test_reports_keep_the_lease_alive(
    aiohttp_client: Any, tmp_path: Path, db: Path | str
) -> None:
    client = await aiohttp_client(app_for(tmp_path, db, lease_duration=1.0))
    task_id = await submit(client, BASE, "resize", {})
    work = await claim(client)
    answer = await answer_of(await report(client, work))
    expires = answer["lease_expires"]
    for step in range(1, 50):  # each answer moves the expiry on
        answer = await answer_of(await report(client, work, body={"progress": step}))
        if answer["lease_expires"] > expires:
            break
    assert answer["lease_expires"] > expires
    assert (await get_task(client, BASE, task_id))["task_status"] == "running"


async def test_a_task_left_in_a_workers_status_without_a_lease_is_given_back(
    aiohttp_client: Any, tmp_path: Path, db: Path | str
) -> None:
    """Rows as a run that served these types in-process leaves them: `running` and
    `cancelling` with no lease. No worker will report on them; the sweep treats them as
    expired."""
    client = await aiohttp_client(app_for(tmp_path, db, lease_duration=1.0))
    running = await submit(client, BASE, "resize", {}, max_retries=1)
    cancelling = await submit(client, BASE, "resize", {}, max_retries=1)
    spent = await submit(client, BASE, "resize", {})
    for task_id, status in ((running, "running"), (cancelling, "cancelling"), (spent, "running")):
        execute(
            db, "UPDATE tasks SET status = ?, server = 'sidetask' WHERE id = ?", (status, task_id)
        )
    task = await wait_status(client, BASE, running, "restoring")
    assert task["task_retries"] == 1
    assert "was RUNNING with no worker's lease" in task["task_result"]
    await wait_status(client, BASE, cancelling, "cancelled")
    task = await wait_status(client, BASE, spent, "failed")
    assert "with no retries left (0 of 0 used)" in task["task_result"]
    work = await claim(client, "w2")
    assert (work["id"], work["retries"]) == (running, 1)
    done = await answer_of(await report(client, work, "/complete", {"result": "ok"}))
    assert (done["task_status"], done["task_server"]) == ("success", "w2")


async def test_tasks_run_in_process_before_their_type_became_external_are_recovered(
    server_factory: Any, tmp_path: Path, http: ClientSession, db: Path | str
) -> None:
    """A real restart: the first run serves `gate` in-process and is killed while its tasks
    run; the second lists `gate` in external_types. The tasks come back through `restoring`
    and a worker claims them; a cancel ends one `cancelled`, and one that was `cancelling`
    ends `cancelled`."""
    jobs = {"gate": "tests.sup_jobs:gate", "stubborn": "tests.sup_jobs:stubborn"}
    first = server_factory(
        db, config_file=write_config(tmp_path), env={"SIDETASK_JOBS": orjson.dumps(jobs).decode()}
    )
    await first.wait_ready()
    api = Api(http, first.url)
    never, started = tmp_path / "never", tmp_path / "started"
    claimed = await api.submit("gate", {"path": str(never), "started": str(started)}, max_retries=1)
    dropped = await api.submit("gate", {"path": str(never)}, max_retries=1)
    stubborn = await api.submit("stubborn", {"path": str(never)})
    for task_id in (claimed, dropped, stubborn):
        await api.wait(task_id, "running")
    assert (await api.cancel(stubborn))["task_status"] == "cancelling"  # it ignores the cancel
    first.kill()

    types = ["gate", "stubborn", "count"]
    second = server_factory(db, config_file=write_config(tmp_path, external_types=types))
    await second.wait_ready()
    api = Api(http, second.url)
    await api.wait(stubborn, "cancelled")
    task = await api.wait(dropped, "restoring")
    assert task["task_retries"] == 1
    assert (await api.cancel(dropped))["task_status"] == "cancelled"
    async with http.post(
        f"{second.url}/workers/w1/claim", params={"types": "gate", "wait": "5"}
    ) as response:
        assert response.status == 200, await response.text()
        work = await response.json()
    assert (work["id"], work["retries"]) == (claimed, 1)
    url, headers = f"{second.url}{work['task_url']}", {"X-Lease": work["lease"]}
    async with http.post(
        f"{url}/complete", json={"result": "by a worker"}, headers=headers
    ) as response:
        done = await response.json()
    assert (done["task_status"], done["task_server"]) == ("success", "w1"), done
    assert trail(db, claimed)[-5:] == ["running", "restoring", "scheduled", "running", "success"]


async def test_a_restart_of_the_service_keeps_the_workers_leases(
    server_factory: Any, tmp_path: Path, http: ClientSession, db: Path | str
) -> None:
    conf = write_config(tmp_path, lease_duration=10.0, default_max_retries=2)
    first = server_factory(db, config_file=conf)
    await first.wait_ready()
    async with http.post(f"{first.url}{BASE}/jobs/hold", json={"release": "x"}) as response:
        assert response.status == 201, await response.text()
        task_id = (await response.json())["task_id"]
    async with http.post(f"{first.url}/workers/w1/claim", params={"wait": "5"}) as response:
        work = await response.json()
    headers = {"X-Lease": work["lease"]}
    async with http.put(
        f"{first.url}{work['task_url']}/progress", json={"progress": 1}, headers=headers
    ) as response:
        assert response.status == 200
    first.kill()

    second = server_factory(db, config_file=conf)
    await second.wait_ready()
    async with http.put(
        f"{second.url}{work['task_url']}/progress", json={"progress": 2}, headers=headers
    ) as response:
        answer = await response.json()
        assert response.status == 200, answer
    assert (answer["task_status"], answer["task_progress"]) == ("running", 2)
    async with http.post(
        f"{second.url}{work['task_url']}/complete", json={"result": 1}, headers=headers
    ) as response:
        done = await response.json()
    assert (done["task_status"], done["task_retries"]) == ("success", 0)
    assert "restoring" not in trail(db, task_id)


# --- real worker processes against a real server ---


def write_config(tmp_path: Path, **settings: Any) -> Path:
    values = {
        "graphs": ["DEFAULT/hugegraph"],
        "external_types": [
            "hold",
            "spin",
            "count",
            "broken",
            "hopeless",
            "countdown",
            "deep",
            "big",
        ],
        "lease_duration": 2.0,
        "default_max_retries": 0,
        "retry_backoff": 0.05,
        "progress_interval": 0.02,
        "drain_grace": 2.0,
        **settings,
    }
    path = tmp_path / "workers.toml"
    path.write_text("".join(f"{k} = {orjson.dumps(v).decode()}\n" for k, v in values.items()))
    return path


class Processes:
    """Worker processes a test starts, each in its own process group, killed at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self, argv: list[str], name: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.tmp_path / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            start_new_session=True,
        )  # fmt: skip
        log.close()
        self.started.append(proc)
        return proc

    def python_worker(
        self, url: str, name: str, *types: str, options: tuple[str, ...] = ("--wait", "5")
    ) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "service.worker", "--url", url, "--name", name, *options]
        for type_name in types:
            argv += ["--job", f"{type_name}=tests.jobs_helpers.worker_jobs:{type_name}"]
        return self.start(argv, name)

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the group: a shell worker's curl too
        proc.wait(10)

    def close(self) -> None:
        for proc in self.started:
            self.kill(proc)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    yield started
    started.close()


class Api:
    """The task API of a real server, for the tests below."""

    def __init__(self, http: ClientSession, url: str) -> None:
        self.http, self.url = http, url

    async def submit(self, job_type: str, body: Any, **query: Any) -> int:
        params = {k: str(v) for k, v in query.items()}
        async with self.http.post(
            f"{self.url}{BASE}/jobs/{job_type}", json=body, params=params
        ) as response:
            assert response.status == 201, await response.text()
            return int((await response.json())["task_id"])

    async def get(self, task_id: int) -> dict[str, Any]:
        async with self.http.get(f"{self.url}{BASE}/tasks/{task_id}") as response:
            return dict(await response.json())

    async def wait(
        self, task_id: int, *statuses: str, check: Callable[[dict[str, Any]], bool] = lambda t: True
    ) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            task = await self.get(task_id)
            return task if task["task_status"] in statuses and check(task) else None

        return await wait_for(probe, 20, f"task {task_id} to reach {statuses}")

    async def cancel(self, task_id: int) -> dict[str, Any]:
        async with self.http.put(
            f"{self.url}{BASE}/tasks/{task_id}", params={"action": "cancel"}
        ) as response:
            assert response.status == 202
            return dict(await response.json())


@pytest.fixture
async def api(server_factory: Any, tmp_path: Path, http: ClientSession) -> AsyncIterator[Api]:
    server = server_factory(config_file=write_config(tmp_path))
    await server.wait_ready()
    yield Api(http, server.url)


async def test_a_python_worker_runs_plain_and_async_functions(
    api: Api, processes: Processes
) -> None:
    processes.python_worker(api.url, "py-1", "count", "broken", "hopeless")
    counted = await api.submit("count", {"steps": 5})
    task = await api.wait(counted, "success")
    assert (task["task_result"], task["task_progress"], task["task_server"]) == (
        '{"counted":5}',
        5,
        "py-1",
    )
    broken = await api.submit("broken", {"message": "no such image"}, max_retries=1)
    task = await api.wait(broken, "failed")
    assert (task["task_result"], task["task_retries"]) == ("ValueError: no such image", 1)
    hopeless = await api.submit("hopeless", {}, max_retries=3)
    task = await api.wait(hopeless, "failed")
    assert (task["task_result"], task["task_retries"]) == (
        "PermanentFailure: no retry can mend this",
        0,
    )


async def test_a_python_worker_sends_a_result_nested_to_the_bound_and_fails_a_deeper_one(
    api: Api, processes: Processes
) -> None:
    processes.python_worker(api.url, "py-deep", "deep")
    fits = await api.submit("deep", {"depth": 254})
    beyond = await api.submit("deep", {"depth": 255}, max_retries=2)
    task = await api.wait(fits, "success", "failed")
    assert (task["task_status"], task["task_result"]) == ("success", deep_json(254).decode())
    task = await api.wait(beyond, "success", "failed")
    assert (task["task_status"], task["task_retries"]) == ("failed", 0)  # no retry mends it
    assert (
        task["task_result"]
        == "The job's result is nested too deeply; at most 254 levels are allowed"
    )


async def test_a_result_the_service_refuses_fails_the_task_with_the_services_words(
    server_factory: Any, tmp_path: Path, http: ClientSession, processes: Processes
) -> None:
    server = server_factory(config_file=write_config(tmp_path, max_result_bytes=1000))
    await server.wait_ready()
    api = Api(http, server.url)
    worker = processes.python_worker(server.url, "py-big", "big")
    task_id = await api.submit("big", {"size": 5000}, max_retries=2)
    task = await api.wait(task_id, "failed", "success")
    assert (task["task_status"], task["task_retries"]) == ("failed", 0)  # no retry mends it
    assert task["task_result"] == (
        "The service refused the job's result: The result is 5002 bytes of JSON; the limit is "
        "1000 bytes (max_result_bytes)"
    )
    assert worker.poll() is None  # a refused result is the task's problem, not the worker's
    done = await api.submit("big", {"size": 10})
    assert (await api.wait(done, "success", "failed"))["task_result"] == '"xxxxxxxxxx"'


async def test_a_burst_worker_runs_what_is_waiting_then_exits(
    api: Api, processes: Processes
) -> None:
    ids = [await api.submit("count", {"steps": n}) for n in (1, 2, 3)]
    worker = processes.python_worker(
        api.url,
        "burst-1",
        "count",
        options=("--burst", "--wait", "0", "--header", "X-Team: imaging"),
    )
    assert await asyncio.wait_for(asyncio.to_thread(worker.wait), 20) == 0
    for task_id, steps in zip(ids, (1, 2, 3), strict=True):
        task = await api.get(task_id)
        assert (task["task_status"], task["task_progress"], task["task_server"]) == (
            "success",
            steps,
            "burst-1",
        )


async def finished(proc: subprocess.Popen[bytes], log: Path) -> tuple[int, str]:
    """A worker process's exit status and its log, once it exits (within 20 s)."""
    code = await asyncio.wait_for(asyncio.to_thread(proc.wait), 20)
    return code, log.read_text(errors="replace")


@pytest.mark.parametrize(
    "options", [("--burst", "--wait", "0"), ("--wait", "1")], ids=["burst", "polling"]
)
async def test_a_worker_for_a_type_the_service_does_not_serve_says_so_and_exits(
    api: Api, processes: Processes, tmp_path: Path, options: tuple[str, ...]
) -> None:
    argv = [sys.executable, "-m", "service.worker", "--url", api.url, "--name", "lost-1", *options]
    argv += ["--job", "count=tests.jobs_helpers.worker_jobs:count"]
    argv += ["--job", "resize=tests.jobs_helpers.worker_jobs:count"]  # not an external type there
    worker = processes.start(argv, "lost-1")
    code, log = await finished(worker, tmp_path / "lost-1.log")
    assert code == 3, log
    assert (
        "the service refused the claim (HTTP 400): Job type(s) 'resize' not served by external"
        " workers" in log
    )
    assert "cannot reach" not in log and "trying again" not in log


@pytest.mark.parametrize(
    ("header", "status", "message"),
    [
        ("", 401, "Authentication required"),
        ("Authorization: Bearer not-the-token", 401, "Invalid Bearer token"),
        (f"Authorization: Bearer {NARROW}", 403, 'so it needs the grant "*"'),
    ],
    ids=["no-token", "wrong-token", "graph-limited-token"],
)
async def test_a_worker_the_service_does_not_let_in_says_why_and_exits(
    server_factory: Any,
    processes: Processes,
    tmp_path: Path,
    header: str,
    status: int,
    message: str,
) -> None:
    conf = write_config(tmp_path)
    narrow = auth.hash_token(NARROW)
    conf.write_text(
        conf.read_text()
        + f'\n[tokens]\nnarrow = "{narrow}"\n\n[grants]\nnarrow = ["DEFAULT/hugegraph"]\n'
    )
    server = server_factory(config_file=conf)
    await server.wait_ready()
    options = ("--burst", "--wait", "0", *(("--header", header) if header else ()))
    worker = processes.python_worker(server.url, "shut-out", "count", options=options)
    code, log = await finished(worker, tmp_path / "shut-out.log")
    assert code == 3, log
    assert f"the service refused the claim (HTTP {status}): " in log and message in log, log
    assert "cannot reach" not in log


async def test_a_worker_tries_again_while_the_service_answers_503_or_429(
    aiohttp_client: Any,
) -> None:
    """ "Later" answers are not a refusal: the worker pauses and claims again."""
    answers = [503, 429]
    claims = 0

    async def claim(request: web.Request) -> web.Response:
        nonlocal claims
        claims += 1
        if answers:
            status = answers.pop(0)
            return web.json_response({"message": "busy"}, status=status)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/workers/{worker}/claim", claim)
    stub = await aiohttp_client(app)
    worker = Worker(str(stub.make_url("")), "patient", {"count": lambda task: None}, wait=0)
    assert await asyncio.wait_for(worker.run(burst=True), 20) == 0
    assert claims == 3


async def test_a_refused_worker_raises_the_clients_error_and_sends_its_headers(
    aiohttp_client: Any,
) -> None:
    """Refused is the client's APIError (status, message, exception, cause); the worker's
    headers reach the service with every request."""
    seen: list[tuple[str | None, str | None]] = []

    async def claim(request: web.Request) -> web.Response:
        seen.append((request.headers.get("X-Team"), request.headers.get("Authorization")))
        body = {
            "exception": "UnauthorizedException",
            "message": "Invalid Bearer token",
            "cause": "",
        }
        return web.json_response(body, status=401)

    app = web.Application()
    app.router.add_post("/workers/{worker}/claim", claim)
    stub = await aiohttp_client(app)
    headers = {"X-Team": "imaging", "Authorization": "Bearer not-the-token"}
    worker = Worker(
        str(stub.make_url("")), "shut-out", {"count": lambda task: None}, wait=0, headers=headers
    )
    with pytest.raises(Refused) as refused:
        await asyncio.wait_for(worker.run(), 20)  # not even without burst: no retry mends it
    error = refused.value
    assert isinstance(error, APIError)
    assert (error.status, error.message, error.exception) == (
        401,
        "Invalid Bearer token",
        "UnauthorizedException",
    )
    assert str(error) == "the service refused the claim (HTTP 401): Invalid Bearer token"
    assert seen == [("imaging", "Bearer not-the-token")]


async def test_a_worker_that_cannot_reach_the_service_says_so_in_words(
    processes: Processes, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    worker = processes.python_worker(url, "far-1", "count", options=("--wait", "0"))
    log = tmp_path / "far-1.log"
    text = await wait_for(lambda: _read_when(log, "trying again"), 20, "the worker's retry")
    assert f"cannot reach {url}: connection refused; trying again in" in text
    assert "ssl:default" not in text and worker.poll() is None


async def _read_when(path: Path, part: str) -> str | None:
    text = text_of(path)
    return text if text is not None and part in text else None


async def test_a_worker_killed_mid_task_loses_it_and_another_finishes_it(
    api: Api, processes: Processes, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    task_id = await api.submit("hold", {"release": str(release)}, max_retries=1)
    doomed = processes.python_worker(api.url, "doomed", "hold")
    task = await api.wait(task_id, "running", check=lambda t: t["task_progress"] == 1)
    assert task["task_server"] == "doomed"

    processes.kill(doomed)  # SIGKILL mid-task: no goodbye
    task = await api.wait(task_id, "restoring")  # its lease ran out
    assert task["task_retries"] == 1
    assert "The lease of worker 'doomed'" in task["task_result"]

    release.touch()
    processes.python_worker(api.url, "rescuer", "hold")
    task = await api.wait(task_id, "success")
    assert task["task_server"] == "rescuer"
    assert (task["task_retries"], orjson.loads(task["task_result"])) == (
        1,
        {"released": True, "retries": 1},
    )


async def test_a_cancel_stops_the_workers_function_through_a_progress_report(
    api: Api, processes: Processes, tmp_path: Path
) -> None:
    marker = tmp_path / "stopped"
    processes.python_worker(api.url, "py-1", "spin", "count")
    task_id = await api.submit("spin", {"marker": str(marker)})
    await api.wait(task_id, "running", check=lambda t: t["task_progress"] > 0)
    assert (await api.cancel(task_id))["task_status"] == "cancelling"
    task = await api.wait(task_id, "cancelled")
    assert task["task_progress"] > 0
    stopped_at = int(await wait_for(lambda: _read(marker), 10, "the function's own cancel"))
    assert stopped_at >= task["task_progress"]
    # the worker goes on to the next task
    after = await api.submit("count", {"steps": 2})
    await api.wait(after, "success")


async def _read(path: Path) -> str | None:
    return text_of(path)


def text_of(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


needs_curl = pytest.mark.skipif(
    shutil.which("curl") is None or shutil.which("jq") is None,
    reason="the shell worker needs curl and jq",
)


@needs_curl
async def test_the_shell_worker_counts_down_and_honours_cancel(
    api: Api, processes: Processes
) -> None:
    script = str(ROOT / "scripts" / "worker-example.sh")
    env = {"SIDETASK_URL": api.url, "WORKER_NAME": "shell-1", "WORKER_WAIT": "5"}
    processes.start(["bash", script], "shell-1", env)
    quick = await api.submit("countdown", {"steps": 3, "interval": 0.01})
    task = await api.wait(quick, "success")
    assert (task["task_result"], task["task_progress"], task["task_server"]) == (
        '{"counted":3}',
        3,
        "shell-1",
    )

    endless = await api.submit("countdown", {"steps": 100000, "interval": 0.05})
    await api.wait(endless, "running", check=lambda t: t["task_progress"] > 0)
    await api.cancel(endless)
    task = await api.wait(endless, "cancelled")
    assert 0 < task["task_progress"] < 100000


def group_gone(proc: subprocess.Popen[bytes]) -> bool:
    """Whether nothing of the process's group is left (its curl included)."""
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return True
    return False


async def stopped(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM to the worker (the shell, not its group); its exit status once it and
    everything it started are gone."""
    proc.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(asyncio.to_thread(proc.wait), 10)

    async def gone() -> bool:
        return group_gone(proc)

    await wait_for(gone, 10, "the worker's curl to be gone too")
    return code


@needs_curl
async def test_the_shell_worker_stopped_while_it_waits_for_work_drops_its_claim_and_exits(
    server_factory: Any, tmp_path: Path, http: ClientSession, processes: Processes
) -> None:
    server = server_factory(config_file=write_config(tmp_path), env={"SIDETASK_LOG_LEVEL": "DEBUG"})
    await server.wait_ready()
    api = Api(http, server.url)
    script = str(ROOT / "scripts" / "worker-example.sh")
    env = {"SIDETASK_URL": server.url, "WORKER_NAME": "shell-idle", "WORKER_WAIT": "30"}
    worker = processes.start(["bash", script], "shell-idle", env)
    await wait_for(
        lambda: _contains(server.output(), "worker shell-idle waits"), 10, "the claim to wait"
    )
    assert await stopped(worker) == 0
    assert "worker shell-idle stopped" in (text_of(tmp_path / "shell-idle.log") or "")
    # its claim went with it: a task that comes now is not leased to the stopped worker
    task_id = await api.submit("countdown", {"steps": 1, "interval": 0.01})
    processes.start(
        ["bash", script], "shell-next", {**env, "WORKER_NAME": "shell-next", "WORKER_WAIT": "5"}
    )
    task = await api.wait(task_id, "success")
    assert task["task_server"] == "shell-next"


@needs_curl
async def test_the_shell_worker_stopped_mid_task_hands_it_back_and_exits(
    api: Api, processes: Processes, tmp_path: Path
) -> None:
    script = str(ROOT / "scripts" / "worker-example.sh")
    env = {"SIDETASK_URL": api.url, "WORKER_NAME": "shell-busy", "WORKER_WAIT": "5"}
    worker = processes.start(["bash", script], "shell-busy", env)
    task_id = await api.submit("countdown", {"steps": 100000, "interval": 0.05}, max_retries=1)
    await api.wait(task_id, "running", check=lambda t: t["task_progress"] > 0)
    assert await stopped(worker) == 0
    task = await api.get(task_id)
    assert (task["task_status"], task["task_retries"]) == ("restoring", 1), task
    assert task["task_result"] == "worker shell-busy stopped before the end"
    log = text_of(tmp_path / "shell-busy.log") or ""
    assert f"task {task_id}: stopped" in log and "worker shell-busy stopped" in log


async def test_a_waiting_claim_ends_with_204_when_the_service_stops(
    server_factory: Any, tmp_path: Path, http: ClientSession
) -> None:
    server = server_factory(config_file=write_config(tmp_path), env={"SIDETASK_LOG_LEVEL": "DEBUG"})
    await server.wait_ready()
    waiting = asyncio.ensure_future(
        http.post(f"{server.url}/workers/w1/claim", params={"wait": "60"})
    )
    try:
        await wait_for(
            lambda: _contains(server.output(), "worker w1 waits"), 10, "the claim to be waiting"
        )
        assert server.terminate() == 0
        response = await asyncio.wait_for(waiting, 10)
        assert response.status == 204
    finally:
        waiting.cancel()


async def _contains(text: str, part: str) -> bool:
    return part in text

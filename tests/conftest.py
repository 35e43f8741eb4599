"""Shared fixtures: settings on a real SQLite file in tmp_path, the app through a real server
on loopback, a real `sidetask serve` subprocess for the tests that kill one, and a throwaway
PostgreSQL server (tests/pgserver.py) with a fresh database per test."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient

from service import config
from service.config import Settings
from service.web import create_app
from tests.pgserver import PgServer

ROOT = Path(__file__).resolve().parent.parent
TEST_CONFIG = ROOT / "config" / "test.toml"
BASES = ("/graphspaces/DEFAULT/graphs/hugegraph", "/graphs/hugegraph")
#: the task object's first keys, in HugeGraph's order (SPEC 2): what every test of it expects
HUGEGRAPH_KEYS = [
    "task_name",
    "task_progress",
    "task_create",
    "task_status",
    "task_update",
    "task_result",
    "task_retries",
    "id",
    "task_type",
    "task_callable",
    "task_input",
]

T = TypeVar("T")


def make_settings(tmp_path: Path, db: Path | str | None = None, **overrides: Any) -> Settings:
    """The test configuration on a SQLite file in tmp_path, or on `db` (a file, or a
    PostgreSQL URL: the `any_db` fixture)."""
    where = str(tmp_path / "sidetask.db") if db is None else str(db)
    return config.load(TEST_CONFIG, env={}, db=where, **overrides)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings))


@pytest.fixture(params=BASES, ids=["graphspace", "graph"])
def base(request: pytest.FixtureRequest) -> str:
    """Both address shapes of SPEC 1."""
    return str(request.param)


async def wait_for(
    probe: Callable[[], Awaitable[T | None]], timeout: float = 10.0, what: str = "condition"
) -> T:
    """Polls `probe` until it returns something truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


async def submit(client: Any, base: str, job_type: str, body: Any = None, **query: Any) -> int:
    response = await client.post(
        f"{base}/jobs/{job_type}", json=body, params={k: str(v) for k, v in query.items()}
    )
    assert response.status == 201, await response.text()
    return int((await response.json())["task_id"])


async def get_task(client: Any, base: str, task_id: int) -> dict[str, Any]:
    response = await client.get(f"{base}/tasks/{task_id}")
    assert response.status == 200, await response.text()
    return dict(await response.json())


async def wait_status(
    client: Any, base: str, task_id: int, *statuses: str, timeout: float = 10.0
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        task = await get_task(client, base, task_id)
        return task if task["task_status"] in statuses else None

    return await wait_for(probe, timeout, f"task {task_id} to reach {statuses}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A real `python -m service serve` on loopback."""

    def __init__(
        self,
        db: Path | str,
        config_file: Path = TEST_CONFIG,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        log_dir: Path | None = None,
    ) -> None:
        """`db`: a SQLite file, or a PostgreSQL URL (then `log_dir` holds the log)."""
        self.db = db
        #: the environment it was given on top of this one's
        self.env = dict(env or {})
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if isinstance(db, Path):
            self.log = db.with_suffix(f".{self.port}.log")
        else:
            assert log_dir is not None, "a PostgreSQL server's log needs a directory"
            self.log = log_dir / f"server.{self.port}.log"
        cmd = [
            sys.executable,
            "-m",
            "service",
            "serve",
            "--port",
            str(self.port),
            "--db",
            str(db),
            "--config",
            str(config_file),
            *args,
        ]
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    async def wait_ready(self, timeout: float = 15.0) -> None:
        async with ClientSession() as session:

            async def probe() -> bool:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"server exited with {self.proc.returncode}: {self.output()}"
                    )
                try:
                    async with session.get(f"{self.url}/ready") as response:
                        return response.status == 200
                except OSError:
                    return False

            await wait_for(probe, timeout, "the server to be ready")

    def output(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        self.kill()
        self._log_file.close()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(db: Path | str | None = None, **kwargs: Any) -> ServerProcess:
        server = ServerProcess(db or tmp_path / "sidetask.db", log_dir=tmp_path, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
async def http() -> AsyncIterator[ClientSession]:
    async with ClientSession() as session:
        yield session


#: the slow groups, by path (registered in pyproject.toml; `scripts/test --fast` leaves them
#: out): a file's tests carry its group's marker, a folder's every file's
GROUPS = {
    "tests/browser/": "browser",
    "tests/web/test_chaos.py": "chaos",
    "tests/pg/test_chaos_replicas.py": "chaos",
    "tests/web/test_fuzz.py": "fuzz",
    # real `python -m service serve` processes, killed, flooded or measured
    "tests/web/test_recovery.py": "slow",
    "tests/web/test_schedules_kill.py": "slow",
    "tests/web/test_attempts_processes.py": "slow",
    "tests/web/test_webhooks_processes.py": "slow",
    "tests/web/test_memory.py": "slow",
    "tests/web/test_floods.py": "slow",
    "tests/web/test_import_paths.py": "slow",
    "tests/web/test_pyhugegraph.py": "slow",
    # external workers and the sidetask command, each a process of its own
    "tests/web/test_workers.py": "slow",
    "tests/web/test_cli.py": "slow",
    "tests/web/test_schedules_cli.py": "slow",
    # the benchmark, pip, the deployment files, the lint and type check, the state machine
    "tests/unit/test_bench_quick.py": "slow",
    "tests/unit/test_install_script.py": "slow",
    "tests/unit/test_deploy.py": "slow",
    "tests/unit/test_code_quality.py": "slow",
    "tests/unit/test_stateful.py": "slow",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = item.path.relative_to(ROOT).as_posix()
        for prefix, marker in GROUPS.items():
            if path == prefix or (prefix.endswith("/") and path.startswith(prefix)):
                item.add_marker(marker)


#: set by .ci/run: a run without PostgreSQL's binaries fails instead of skipping its tests
REQUIRE_PG = "SIDETASK_REQUIRE_PG"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One throwaway PostgreSQL server for the whole run, started when a test first asks for
    it (about a second), stopped and its directory removed at the end. Without PostgreSQL's
    binaries the tests that need it skip, or fail when SIDETASK_REQUIRE_PG=1."""
    bindir = PgServer.find()
    if bindir is None:
        missing = (
            "PostgreSQL's binaries (initdb, pg_ctl, psql) were not found: install them with "
            "`apt-get install postgresql` (scripts/test does when run as root)"
        )
        if os.environ.get(REQUIRE_PG) == "1":
            pytest.fail(f"{REQUIRE_PG}=1 and {missing}", pytrace=False)
        pytest.skip(missing)
    server = PgServer(bindir).start()
    try:
        yield server
    finally:
        server.stop()


_databases = itertools.count(1)


@pytest.fixture(params=["sqlite", "postgres"])
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """A fresh database on each backend: a SQLite file in tmp_path, or a PostgreSQL URL (a
    database of its own on the run's server). tests/sup_util reads and writes either."""
    if request.param == "sqlite":
        return tmp_path / "sidetask.db"
    return str(request.getfixturevalue("pg_dsn"))


#: databases of tests that have ended, dropped when the next one is made
_finished_databases: list[str] = []


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty database (test_N) on the session's server: its DSN. It is dropped
    when the next test makes one, not at this test's teardown: an app the test started may
    still be closing then (pytest-asyncio finalizes async fixtures after sync ones), and a
    forced drop would cut its connections under it. The server goes at the session's end."""
    while _finished_databases:
        pg_server.drop_database(_finished_databases.pop())
    name = f"test_{next(_databases)}"
    dsn = pg_server.create_database(name)
    yield dsn
    _finished_databases.append(name)

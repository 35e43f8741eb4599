"""The throwaway PostgreSQL server of the tests (tests/pgserver.py, the fixtures `pg_server`
and `pg_dsn`): a working database per test, databases apart from each other, a server that
is not root's, and nothing left running after a stop or after its starter is killed; scripts/pg, the same
server by hand."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests import pgserver
from tests.conftest import REQUIRE_PG, ROOT, wait_for
from tests.pgserver import PgServer


async def table_exists(dsn: str, table: str) -> bool:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        return bool(await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", table))
    finally:
        await connection.close(timeout=10)


def gone(pid: int) -> bool:
    """The process has exited (reaped, or a zombie waiting for its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def postmaster_pid(server: PgServer) -> int:
    return int((server.data / "postmaster.pid").read_text().split()[0])


async def test_a_test_gets_a_working_database(pg_dsn: str) -> None:
    async with asyncio.timeout(30):
        connection = await asyncpg.connect(pg_dsn, timeout=10)
        try:
            assert await connection.fetchval("SELECT 1") == 1
            assert await connection.fetchval("SELECT current_database()") == pg_dsn.rsplit("/")[-1]
            await connection.execute("CREATE TABLE t (id bigint PRIMARY KEY, note text)")
            await connection.execute("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
            rows = await connection.fetch("SELECT note FROM t ORDER BY id")
            assert [row["note"] for row in rows] == ["one", "two"]
        finally:
            await connection.close(timeout=10)


async def test_databases_are_apart(pg_server: PgServer, pg_dsn: str) -> None:
    """A table made in one test's database is absent from another database of the server."""
    async with asyncio.timeout(30):
        connection = await asyncpg.connect(pg_dsn, timeout=10)
        try:
            await connection.execute("CREATE TABLE only_here (id bigint)")
        finally:
            await connection.close(timeout=10)
        assert await table_exists(pg_dsn, "only_here")
        other = pg_server.create_database("apart_other")
        try:
            assert other != pg_dsn
            assert not await table_exists(other, "only_here")
        finally:
            pg_server.drop_database("apart_other")


async def test_the_server_is_not_root(pg_dsn: str) -> None:
    """PostgreSQL refuses root: run as root, the server is the user postgres's (or nobody's),
    its data directory theirs; run as anyone else, the server is theirs."""
    async with asyncio.timeout(30):
        connection = await asyncpg.connect(pg_dsn, timeout=10)
        try:
            data = Path(await connection.fetchval("SELECT current_setting('data_directory')"))
            backend = int(await connection.fetchval("SELECT pg_backend_pid()"))
            # the uid of the process serving this connection (it ends with the connection)
            process_uid = os.stat(f"/proc/{backend}").st_uid
        finally:
            await connection.close(timeout=10)
    owner = data.stat().st_uid
    if os.geteuid() == 0:
        assert owner != 0
        assert process_uid != 0
    else:
        assert owner == os.geteuid()
        assert process_uid == os.geteuid()


def test_stop_leaves_nothing() -> None:
    server = PgServer().start()
    directory, pid = server.dir, postmaster_pid(server)
    assert directory is not None and directory.is_dir() and not gone(pid)
    server.stop()
    assert not directory.exists()
    assert gone(pid)
    server.stop()  # a second stop does nothing


async def test_a_killed_starter_leaves_nothing() -> None:
    """SIGKILL of the process that started a server: its watchdog stops the server and
    removes the directory."""
    code = (
        "import sys\n"
        "from tests.pgserver import PgServer\n"
        "server = PgServer().start()\n"
        "pid = (server.data / 'postmaster.pid').read_text().split()[0]\n"
        "print(server.dir, pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    starter = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            assert starter.stdout is not None
            line = (await starter.stdout.readline()).decode().split()
        assert len(line) == 2, f"the starter printed {line!r}, exit {starter.returncode}"
        directory, pid = Path(line[0]), int(line[1])
        assert directory.is_dir() and not gone(pid)
    finally:
        starter.kill()
        async with asyncio.timeout(30):
            await starter.wait()

    async def nothing_left() -> bool:
        return gone(pid) and not directory.exists()

    await wait_for(nothing_left, 30, "the watchdog to stop the server and remove its directory")


@pytest.fixture
def taken_port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A port something else listens on, handed out as the first free port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = int(sock.getsockname()[1])
        ports = iter([port])
        real = pgserver.free_port
        monkeypatch.setattr(pgserver, "free_port", lambda: next(ports, None) or real())
        yield port


async def test_a_taken_port_is_retried(taken_port: int) -> None:
    with PgServer() as server:
        assert server.port not in (0, taken_port)
        assert "could not bind" in server.log.read_text()
        assert server.psql("SELECT 41 + 1").strip() == "42"


def test_find_without_binaries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(pgserver, "DEBIAN_ROOT", tmp_path)
    assert PgServer.find() is None
    (tmp_path / "16" / "bin").mkdir(parents=True)  # a directory without the programs
    assert PgServer.find() is None


@pytest.mark.parametrize("required", [False, True], ids=["skip", "required"])
def test_no_binaries_skips_unless_required(required: bool) -> None:
    """Without PostgreSQL, a test of `pg_dsn` skips; under SIDETASK_REQUIRE_PG=1 (CI) it
    fails, saying how to install PostgreSQL."""
    code = (
        "import sys, pytest\n"
        "from tests.pgserver import PgServer\n"
        "PgServer.find = staticmethod(lambda: None)\n"
        "sys.exit(pytest.main(sys.argv[1:]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != REQUIRE_PG}
    if required:
        env[REQUIRE_PG] = "1"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/pg/test_pgserver.py::test_a_test_gets_a_working_database",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if required:
        assert result.returncode == 1, result.stdout + result.stderr
        assert "1 error" in result.stdout
        assert "apt-get install postgresql" in result.stdout
    else:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "1 skipped" in result.stdout


async def test_scripts_pg_serves_until_interrupted() -> None:
    """scripts/pg prints a DSN that works, and Ctrl-C stops the server and removes its
    directory."""
    script = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "scripts" / "pg"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            assert script.stdout is not None
            line = (await script.stdout.readline()).decode().strip()
            assert line.startswith("export SIDETASK_DB=postgresql://"), line
            dsn = line.removeprefix("export SIDETASK_DB=")
            connection = await asyncpg.connect(dsn, timeout=10)
            try:
                data = Path(await connection.fetchval("SELECT current_setting('data_directory')"))
                assert await connection.fetchval("SELECT 1") == 1
            finally:
                await connection.close(timeout=10)
        script.send_signal(signal.SIGINT)
        async with asyncio.timeout(60):
            _, err = await script.communicate()
        assert script.returncode == 0, err.decode()
        assert not data.parent.exists()
    finally:
        if script.returncode is None:
            script.kill()
            async with asyncio.timeout(30):
                await script.wait()

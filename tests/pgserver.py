"""A throwaway PostgreSQL server for the tests (the `pg_server` fixture) and for developers
(`scripts/pg`): initdb in a temporary directory, pg_ctl on a free loopback port, stopped and
its directory removed at the end.

PostgreSQL refuses to run as root, so as root the server runs as the user `postgres` (made by
Debian's package; `nobody` when there is none) in a directory chowned to it. A watchdog, a
shell of that user waiting for its stdin to close, stops the server and removes the
directory when the process that started it dies without stopping it (SIGKILL, a crash):
nothing of a run outlives it."""

from __future__ import annotations

import atexit
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import urllib.parse
from pathlib import Path
from types import TracebackType

#: where Debian's packages put each major version's binaries (VERSION/bin)
DEBIAN_ROOT = Path("/usr/lib/postgresql")
#: the superuser initdb makes, and the database every server has
USER = "postgres"
#: settings for a server whose data is thrown away: nothing is flushed to disk
NO_SYNC = ("-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off")
#: start attempts, each on another free port (another process may take one between the
#: probe and the server's bind)
PORT_ATTEMPTS = 5
#: seconds for one initdb, pg_ctl or psql call
TIMEOUT = 120
#: what the watchdog runs as: wait for stdin's end (the starter's exit, however it ends),
#: then stop the server, at once, and remove its directory ($1 pg_ctl, $2 data, $3 the dir);
#: after a normal stop() both find nothing left to do
WATCHDOG = 'cat >/dev/null; "$1" stop -D "$2" -m immediate; rm -rf "$3"'


class PgServerError(RuntimeError):
    """initdb, pg_ctl or psql failed; the message holds its output (or the server's log)."""


class PgServer:
    """One PostgreSQL server in a temporary directory: `start()`, then `dsn` (the database
    `postgres`), `create_database`, `drop_database`, and `stop()`. Also a context manager."""

    def __init__(
        self, bindir: Path | None = None, *, fsync: bool = False, port: int | None = None
    ) -> None:
        found = bindir or self.find()
        if found is None:
            raise PgServerError(
                "PostgreSQL's binaries (initdb, pg_ctl) were not found: apt-get install postgresql"
            )
        self.bindir = found
        #: keep fsync on (for tests that kill the server and count what survived)
        self.fsync = fsync
        #: a port of your choice (one attempt); None: a free one, another if it is taken
        self.wanted_port = port
        #: the user the server runs as when we are root; None: as ourselves
        self.user = server_user()
        self.dir: Path | None = None
        self.port = 0
        self._watchdog: subprocess.Popen[bytes] | None = None

    @staticmethod
    def find() -> Path | None:
        """The directory of PostgreSQL's initdb and pg_ctl: `pg_config --bindir`, else the
        newest /usr/lib/postgresql/*/bin, else initdb's on PATH; None when there is none."""
        candidates: list[Path] = []
        pg_config = shutil.which("pg_config")
        if pg_config:
            # libpq-dev's pg_config names a bindir without a server when only the client is
            # installed: every candidate is checked for initdb and pg_ctl
            try:
                result = subprocess.run(
                    [pg_config, "--bindir"], capture_output=True, text=True, timeout=30
                )
                if result.returncode == 0 and result.stdout.strip():
                    candidates.append(Path(result.stdout.strip()))
            except (OSError, subprocess.TimeoutExpired):
                pass
        versions = sorted(DEBIAN_ROOT.glob("*/bin"), key=lambda p: version_key(p.parent.name))
        candidates.extend(reversed(versions))
        initdb = shutil.which("initdb")
        if initdb:
            candidates.append(Path(initdb).resolve().parent)
        for bindir in candidates:
            if all(os.access(bindir / name, os.X_OK) for name in ("initdb", "pg_ctl", "psql")):
                return bindir
        return None

    @property
    def data(self) -> Path:
        """The data directory (DIR/data; DIR also holds the log and the socket)."""
        if self.dir is None:
            raise PgServerError("the server is not started")
        return self.dir / "data"

    @property
    def log(self) -> Path:
        return self.data.parent / "log"

    @property
    def dsn(self) -> str:
        """The database `postgres` as the superuser `postgres` (trust: no password)."""
        return self.dsn_of(USER)

    def dsn_of(self, database: str) -> str:
        if not self.port:
            raise PgServerError("the server is not started")
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{urllib.parse.quote(database, safe='')}"

    def start(self) -> PgServer:
        """initdb, then pg_ctl start (waiting until it accepts connections). Returns self.
        A failure stops whatever was started and removes the directory."""
        if self.dir is not None:
            raise PgServerError("the server is already started")
        self.dir = Path(tempfile.mkdtemp(prefix="sidetask-pg-"))
        atexit.register(self.stop)
        try:
            if self.user is not None:
                entry = pwd.getpwnam(self.user)
                os.chown(self.dir, entry.pw_uid, entry.pw_gid)
            self._watchdog = subprocess.Popen(
                [
                    "/bin/sh",
                    "-c",
                    WATCHDOG,
                    "sh",
                    str(self.bindir / "pg_ctl"),
                    str(self.data),
                    str(self.dir),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd="/",
                user=self.user,
                # its own session: a Ctrl-C for the starter is not the watchdog's
                start_new_session=True,
            )
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                USER,
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            )
            self._listen()
        except BaseException:
            self.stop()
            raise
        return self

    def _listen(self) -> None:
        assert self.dir is not None
        attempts = 1 if self.wanted_port else PORT_ATTEMPTS
        for _ in range(attempts):
            port = self.wanted_port or free_port()
            options = [
                "-c listen_addresses=127.0.0.1",
                f"-p {port}",
                f"-k {shlex.quote(str(self.dir))}",
                "-c max_connections=200",
                *(() if self.fsync else NO_SYNC),
            ]
            seen = self.log.stat().st_size if self.log.exists() else 0
            result = self._command(
                "pg_ctl", "start", "-w", "-D", str(self.data), "-l", str(self.log),
                "-o", " ".join(options),
            )  # fmt: skip
            if result.returncode == 0:
                self.port = port
                return
            logged = ""
            if self.log.exists():
                with self.log.open("rb") as file:
                    file.seek(seen)
                    logged = file.read().decode(errors="replace")
            taken = "could not bind" in logged or "already in use" in logged
            if not taken or self.wanted_port:
                raise PgServerError(f"pg_ctl start failed:\n{result.stdout}{logged}")
        raise PgServerError(f"pg_ctl start: no free port in {attempts} attempts")

    def interrupt(self) -> None:
        """Stops the server but keeps its data, as a database that goes away for a while:
        every connection is closed, and new ones are refused until `resume`."""
        self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data))

    def resume(self) -> None:
        """Starts the interrupted server again, on the same port."""
        wanted, self.wanted_port = self.wanted_port, self.port
        try:
            self._listen()
        finally:
            self.wanted_port = wanted

    def stop(self) -> None:
        """Stops the server (fast: connections are closed) and removes its directory. Does
        nothing when it is not started; safe to call twice."""
        if self.dir is None:
            return
        try:
            if (self.data / "postmaster.pid").exists():
                result = self._command("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data))
                if result.returncode != 0:
                    self._command("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(self.data))
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            if self._watchdog is not None:
                # its stdin's end: it finds no server and no directory, and exits
                assert self._watchdog.stdin is not None
                self._watchdog.stdin.close()
                try:
                    self._watchdog.wait(30)
                except subprocess.TimeoutExpired:
                    self._watchdog.kill()
                    self._watchdog.wait()
                self._watchdog = None
            self.dir = None
            self.port = 0
            atexit.unregister(self.stop)

    def create_database(self, name: str, template: str | None = None) -> str:
        """CREATE DATABASE `name` (from `template`, whose copy needs nobody connected to it);
        returns its DSN."""
        sql = f"CREATE DATABASE {quote_ident(name)}"
        if template is not None:
            sql += f" TEMPLATE {quote_ident(template)}"
        self.psql(sql)
        return self.dsn_of(name)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE `name` if it exists, closing its connections (WITH (FORCE): 13+)."""
        self.psql(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")

    def psql(self, sql: str, database: str = USER) -> str:
        """Runs `sql` with psql in `database`; returns what it printed (unaligned, no headers)."""
        result = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.dsn_of(database),
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=client_env(),
        )
        if result.returncode != 0:
            raise PgServerError(f"psql {sql!r} failed: {result.stderr.strip()}")
        return result.stdout

    def _command(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        """One of the server's programs as the server's user, in its directory."""
        return subprocess.run(
            [str(self.bindir / program), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=TIMEOUT,
            cwd=self.dir,
            user=self.user,
            env=client_env(),
        )

    def _run(self, program: str, *args: str) -> None:
        result = self._command(program, *args)
        if result.returncode != 0:
            raise PgServerError(f"{program} failed:\n{result.stdout}")

    def __enter__(self) -> PgServer:
        return self.start() if self.dir is None else self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def server_user() -> str | None:
    """Whom the server runs as: None (ourselves) unless we are root, then `postgres`, else
    `nobody`."""
    if os.geteuid() != 0:
        return None
    for name in (USER, "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise PgServerError("running as root, and neither the user postgres nor nobody exists")


def client_env() -> dict[str, str]:
    """Our environment without libpq's PG* variables (PGDATA, PGPORT, PGHOST, …), which
    would point the programs at another server."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name))


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

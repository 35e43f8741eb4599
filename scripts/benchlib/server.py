"""Processes started for a benchmark: a sidetask server (a fresh database unless given one,
loopback, its own TOML settings on top of the shipped ones) and the ceiling endpoint."""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from . import cpu

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
#: every benchmark file (databases, configs, logs) lives under one directory per process,
#: removed when the process exits unless keep_work_dir() was called
_WORK: Path | None = None
_KEEP = False


def work_dir() -> Path:
    global _WORK
    if _WORK is None:
        _WORK = Path(tempfile.mkdtemp(prefix="sidetask-bench-"))
        atexit.register(remove_work_dir)
    return _WORK


def keep_work_dir() -> None:
    global _KEEP
    _KEEP = True


def remove_work_dir() -> None:
    global _WORK
    if _WORK is not None and not _KEEP:
        shutil.rmtree(_WORK, ignore_errors=True)
        _WORK = None


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, on uvloop when it is installed (the load client must not be the bottleneck)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def child_env() -> dict[str, str]:
    """The environment of a started process: ours without SIDETASK_* (they would override
    the settings the benchmark states), with scripts/ and the checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDETASK_")}
    env["PYTHONPATH"] = f"{SCRIPTS}{os.pathsep}{ROOT}"
    return env


def run_python(code: str, env: dict[str, str], what: str) -> str:
    """Runs `code` in a fresh interpreter from the checkout (a peer's producer, its schema):
    its standard output; an error naming `what`, with the end of its stderr, if it fails."""
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{what} failed: {out.stderr[-2000:]}")
    return out.stdout


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A process's resident set (VmRSS), or its peak so far (VmHWM), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Process:
    """A server process on a free loopback port, ready when GET /ready answers 200."""

    name = "process"

    def __init__(self, argv: list[str], port: int, dir: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.dir = dir
        self.log_path = dir / f"{self.name}.log"
        self.log = self.log_path.open("ab")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=child_env(), stdout=self.log, stderr=subprocess.STDOUT
        )
        try:
            #: seconds from the process's start to its first 200 on /ready
            self.ready_seconds = self.wait_ready()
            #: its CPU from its start to that first 200 (benchlib.cpu)
            self.cpu_to_ready = cpu.between(
                cpu.Snapshot(self.pid, self.started), cpu.snapshot(self.pid)
            )
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout: float = 120.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited ({self.proc.returncode}): {self.log_path.read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/ready", timeout=1) as response:
                    if response.status == 200:
                        return time.monotonic() - self.started
            except OSError:
                pass
            time.sleep(0.002)
        raise RuntimeError(f"{self.name} not ready in {timeout:g} s")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_mb(self) -> float:
        return rss_mb(self.pid)

    def peak_rss_mb(self) -> float:
        """The largest resident set the process has had so far (the kernel's VmHWM)."""
        return rss_mb(self.pid, "VmHWM")

    def cpu_window(self) -> cpu.Window:
        """`with server.cpu_window() as w: …`, then `w.result(units)`: the process's CPU
        (its threads and children apart) while the block ran (benchlib.cpu)."""
        return cpu.Window(self.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class BenchServer(Process):
    """`python -m service serve` on a free loopback port with the shipped configuration plus
    `settings`; a fresh database in its own directory unless `db` is given."""

    name = "server"

    def __init__(self, db: Path | str | None = None, **settings: Any) -> None:
        dir = Path(tempfile.mkdtemp(prefix="server-", dir=work_dir()))
        #: a SQLite file, or a PostgreSQL URL (the PostgreSQL rows)
        self.db = db or dir / "bench.db"
        self.settings = settings
        self.config = dir / "bench.toml"
        self.config.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in settings.items()))
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "service",
            "serve",
            "--port",
            str(port),
            "--db",
            str(self.db),
            "--config",
            str(self.config),
        ]
        super().__init__(argv, port, dir)


class CeilingServer(Process):
    """The ceiling: a minimal aiohttp endpoint (benchlib.ceiling), its own process, on uvloop
    when installed, like the service."""

    name = "ceiling"

    def __init__(self) -> None:
        dir = Path(tempfile.mkdtemp(prefix="ceiling-", dir=work_dir()))
        port = free_port()
        super().__init__([sys.executable, "-m", "benchlib.ceiling", "--port", str(port)], port, dir)


class RssSampler:
    """Samples a process's RSS every `interval` seconds in a thread: the peak while it runs."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_mb(self.pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb(self.pid))

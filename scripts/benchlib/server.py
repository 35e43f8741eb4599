"""A sidetask server started for a benchmark: a fresh database, loopback, its own config."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]


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


class BenchServer:
    """`python -m service serve` on a free loopback port, stopped by `stop()`."""

    def __init__(self, db: Path | None = None, **settings: Any) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sidetask-bench-"))
        self.db = db or self.dir / "bench.db"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {"log_level": "WARNING", **settings}
        self.config = self.dir / "bench.toml"
        self.config.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in config.items()))
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'scripts'}{os.pathsep}{ROOT}"}
        self.log = (self.dir / "server.log").open("wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--port", str(self.port), "--db", str(self.db), "--config", str(self.config)],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.ready_seconds = self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {(self.dir / 'server.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/ready", timeout=1) as response:
                    if response.status == 200:
                        return time.monotonic() - self.started
            except OSError:
                pass
            time.sleep(0.005)
        raise RuntimeError("server not ready in time")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

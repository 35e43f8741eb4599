"""What the figures were measured on."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from . import wrk
from .server import ROOT


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def _uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "no"
    return f"yes ({uvloop.__version__})"


def _git() -> str:
    def out(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = out("rev-parse", "--short", "HEAD") or "unknown"
    dirty = out("status", "--porcelain", "--untracked-files=no", "--", "service", "config")
    return commit + (" + uncommitted changes in service/ or config/" if dirty else "")


def describe() -> dict[str, Any]:
    from .peer import version as huey_version
    from .pgpeer import version as procrastinate_version

    return {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": round(_memory_gib(), 1),
        "python": platform.python_version(),
        "uvloop": _uvloop(),
        "wrk": wrk.version(),
        "huey": huey_version(),
        "procrastinate": procrastinate_version(),
        "sqlite": sqlite3.sqlite_version,
        "kernel": platform.release(),
        "git": _git(),
        "load_average_start": load_average(),
    }

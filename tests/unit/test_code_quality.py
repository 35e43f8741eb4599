"""The house rules that tools check: ruff's lint and format everywhere, mypy --strict on service/."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_ruff_finds_nothing() -> None:
    result = run("ruff", "check", *CHECKED, "--output-format", "concise")
    assert result.returncode == 0, result.stdout + result.stderr


#: what ruff checks: the trees, and the Python scripts it skips in a tree (no .py suffix)
CHECKED = (
    "service",
    "tests",
    "scripts",
    "scripts/chaos",
    "scripts/fuzz",
    "scripts/bench-sse",
    "scripts/bench-process-jobs",
    "scripts/pg",
)


def test_ruff_format_changes_nothing() -> None:
    result = run("ruff", "format", "--check", *CHECKED)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_finds_nothing() -> None:
    result = run("mypy", "-p", "service")
    assert result.returncode == 0, result.stdout + result.stderr

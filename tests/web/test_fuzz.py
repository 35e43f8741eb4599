"""A short run of scripts/fuzz: schemathesis against the served /openapi.json, every
operation, every check; no failure, no server error. The long run is by hand:
`scripts/fuzz --max-examples 100` (README, "Access and limits")."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytest.importorskip("schemathesis")


@pytest.mark.parametrize("auth", [False, True], ids=["open", "with-credentials"])
def test_a_short_fuzz_run_finds_nothing(tmp_path: Path, auth: bool) -> None:
    command = [
        sys.executable, str(ROOT / "scripts" / "fuzz"),
        "--max-examples", "3", "--seed", "20261121", "--quiet", "--workdir", str(tmp_path),
    ]  # fmt: skip
    if auth:
        command.append("--auth")
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=110)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    found = re.match(
        r"fuzz: operations=(\d+) examples=(\d+) failures=(\d+) server_errors=(\d+)", summary
    )
    assert found, summary
    operations, examples, failures, server_errors = map(int, found.groups())
    assert operations >= 37  # every operation of the document was tested
    assert examples > operations
    assert failures == 0 and server_errors == 0

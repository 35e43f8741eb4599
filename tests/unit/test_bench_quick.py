"""A smoke test of scripts/bench: a few small rows run for real and print their table.

No timing is asserted: figures depend on the machine. What is checked is that the harness
starts its servers, loads them, reads the database, prints the table and the JSON, and
leaves no process or temporary directory behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_rows_print_a_table_and_json(tmp_path: Path) -> None:
    rows = ["e2e", "backlog"]
    if shutil.which("wrk"):  # the ceiling row needs wrk; the harness installs it only as root
        rows.append("ceiling")
    json_file = tmp_path / "bench.json"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    out = subprocess.run(
        [
            str(ROOT / "scripts" / "bench"),
            "--quick",
            "--rows",
            ",".join(rows),
            "--tasks",
            "300",
            "--backlog",
            "2000",
            "--json-file",
            str(json_file),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    table = out.stdout
    assert "QUICK run" in table
    assert "machine: " in table and " cores, " in table
    assert "3 end to end" in table and "tasks/s" in table
    assert "300/300 tasks" in table  # every task's four events stored
    assert "3b backlog" in table and "2,000/2,000 still waiting" in table
    assert "server CPU per task" in table and "= loop " in table and " + writer " in table
    assert "NO THREAD NAMED" not in table
    if "ceiling" in rows:
        assert "1 ceiling" in table and "req/s" in table
        assert "ceiling CPU per request" in table

    document = json.loads(json_file.read_text())
    assert document["quick"] is True
    assert document["failures"] == {}
    load = document["results"]["e2e"]["under_load"]
    assert load["tasks"] == 300 and load["success"] == 300 and load["complete"] == 300
    assert document["results"]["e2e"]["low_load"]["complete"] == 30
    backlog = document["results"]["backlog"]
    assert backlog["database"]["tasks"] == 2000 and backlog["still_waiting"] == 2000
    assert backlog["under_load"]["complete"] == 300
    for result in (load, backlog["under_load"]):
        server_cpu = result["server_cpu"]
        assert server_cpu["units"] == 300 and server_cpu["writer_threads"] == 1
        assert server_cpu["per_unit"]["total_us"] > 0
    if "ceiling" in rows:
        ceiling_cpu = document["results"]["ceiling"]["server_cpu"]
        assert ceiling_cpu["units"] == document["results"]["ceiling"]["requests"]
    # the harness's temporary directory (under TMPDIR) is gone
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("sidetask-bench-")]

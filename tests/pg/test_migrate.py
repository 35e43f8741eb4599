"""`sidetask migrate` on both stores: a fresh database gets the schema, a second run
changes nothing, a database newer than the code is refused (and so is a service on it),
and a URL's password never reaches the output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from service.store import pg_schema, schema
from tests.conftest import ROOT
from tests.sup_util import execute, rows


def sidetask(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def newest(db: Path | str) -> int:
    return pg_schema.SCHEMA_VERSION if isinstance(db, str) else schema.SCHEMA_VERSION


async def test_migrate_makes_the_schema_once(any_db: Path | str) -> None:
    first = sidetask("migrate", "--db", str(any_db))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().endswith(f"schema version {newest(any_db)}")
    again = sidetask("migrate", "--db", str(any_db))
    assert again.returncode == 0 and again.stdout == first.stdout
    assert rows(any_db, "SELECT COUNT(*) FROM tasks") == [(0,)]


async def test_a_database_newer_than_the_code_is_refused(
    any_db: Path | str, tmp_path: Path
) -> None:
    assert sidetask("migrate", "--db", str(any_db)).returncode == 0
    future = newest(any_db) + 1
    if isinstance(any_db, str):
        execute(any_db, "UPDATE schema_version SET version = ?", (future,))
    else:
        execute(any_db, f"PRAGMA user_version = {future}")
    refused = sidetask("migrate", "--db", str(any_db))
    assert refused.returncode == 3
    assert f"schema version {future}, newer than this sidetask knows" in refused.stderr
    assert "Traceback" not in refused.stderr
    serve = sidetask("serve", "--port", "0", "--db", str(any_db))
    assert serve.returncode != 0
    assert "newer than this sidetask knows" in serve.stdout + serve.stderr


async def test_a_password_in_the_url_is_not_printed(pg_dsn: str) -> None:
    with_password = pg_dsn.replace("postgres@", "postgres:hunter2@")  # trust: not checked
    result = sidetask("migrate", "--db", with_password)
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    assert "postgres:***@" in result.stdout

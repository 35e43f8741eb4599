"""The slow groups (browser, chaos, fuzz, slow): each marker registered, each path it is
given by still there, and `scripts/test --fast` leaving them out where `scripts/test` runs
them."""

from __future__ import annotations

import subprocess
import tomllib

from tests.conftest import GROUPS, ROOT


def test_each_group_is_registered_and_names_paths_that_exist() -> None:
    pytest_options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    registered = {line.partition(":")[0] for line in pytest_options["ini_options"]["markers"]}
    assert set(GROUPS.values()) == registered
    assert "--strict-markers" in pytest_options["ini_options"]["addopts"]
    for path in GROUPS:
        assert (ROOT / path).is_dir() if path.endswith("/") else (ROOT / path).is_file(), path


def collected(*args: str) -> list[str]:
    result = subprocess.run(
        ["scripts/test", *args, "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_the_fast_run_leaves_the_slow_groups_out() -> None:
    paths = ("tests/browser/test_docs.py", "tests/web/test_recovery.py", "tests/unit/test_model.py")
    every = collected(*paths)
    fast = collected("--fast", *paths)
    assert {test.partition("::")[0] for test in every} == set(paths)
    assert {test.partition("::")[0] for test in fast} == {"tests/unit/test_model.py"}
    assert fast == [test for test in every if test.startswith("tests/unit/test_model.py")]

"""scripts/install, which scripts/serve and scripts/test start with: pip runs on the first
start of a checkout and when pyproject.toml (or the extra) changed, not on every start.
Run for real on a copy of the project whose .venv/bin/python records pip's calls."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def checkout(tmp_path: Path) -> Path:
    """A copy of the script and pyproject.toml, with a python that logs `-m pip …` (and
    installs nothing) and runs everything else with the real interpreter."""
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "install", root / "scripts" / "install")
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.write_text(
        "#!/usr/bin/env bash\n"
        'if [ "$1" = -m ] && [ "$2" = pip ]; then echo "$*" >> "$(dirname "$0")/../pip.log"; exit 0; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    python.chmod(0o755)
    return root


def install(root: Path, *extra: str) -> list[str]:
    """Runs scripts/install; the pip calls it made."""
    log = root / ".venv" / "pip.log"
    log.unlink(missing_ok=True)
    subprocess.run([root / "scripts" / "install", *extra], check=True, timeout=60)
    return log.read_text().splitlines() if log.exists() else []


def test_pip_runs_only_when_the_project_changed(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    first = install(root)
    assert len(first) == 1 and first[0].endswith("install --quiet --disable-pip-version-check -e .")
    assert install(root) == []  # the next start: nothing changed, no pip
    assert install(root) == []

    with (root / "pyproject.toml").open("a") as file:
        file.write("\n# a new dependency, say\n")
    assert len(install(root)) == 1
    assert install(root) == []


def test_each_extra_has_its_own_stamp(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    assert install(root) != []
    tested = install(root, "test")
    assert len(tested) == 1 and tested[0].endswith("-e .[test]")
    assert install(root, "test") == [] and install(root) == []


def test_a_stamp_that_is_gone_installs_again(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    install(root)
    (root / ".venv" / ".sidetask-install").unlink()
    assert len(install(root)) == 1

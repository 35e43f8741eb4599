"""The scripts of scripts/ run in the project's environment, .venv (made by scripts/serve,
scripts/test or scripts/bench): one started by another Python (`scripts/chaos` through its
`#!/usr/bin/env python3` line) runs itself again with .venv's."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"


def use() -> None:
    python = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not python.exists():
        sys.exit(
            f"{Path(sys.argv[0]).name}: run scripts/test once first: it makes .venv with what this needs"
        )
    os.execv(python, [str(python), *sys.argv])

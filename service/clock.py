"""The one clock: every "now" in the service comes from here, so tests can drive time."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds, as task timestamps are written."""
    return time.time_ns() // 1_000_000

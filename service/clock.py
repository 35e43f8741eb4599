"""The one clock: every "now" in the service comes from here, so tests can drive time."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds, as task timestamps are written."""
    return time.time_ns() // 1_000_000


class ManualClock:
    """A clock a test moves by hand: installed over `now_ms` (monkeypatch.setattr(clock,
    "now_ms", manual)), every "now" of the service is its `ms`, which moves only by
    `advance` (from the real time when it was made, so stored times stay plausible)."""

    def __init__(self, start_ms: int | None = None) -> None:
        self.ms = now_ms() if start_ms is None else start_ms

    def __call__(self) -> int:
        return self.ms

    def advance(self, seconds: float) -> int:
        self.ms += round(seconds * 1000)
        return self.ms

"""Exponential backoff with jitter and a cap: the pauses of every retry loop (the worker's
claims and reports, an event stream's reconnections, so the `sidetask watch` command's too,
and the supervisor's writes of a task's end while the store cannot write). Pure: no I/O."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    """Pauses that double from `first` up to `cap`, each lengthened by a random part of up
    to `jitter` of itself (never past the cap), so clients that lost the same server do not
    come back in step; a pause is never shorter than its doubling step, so a delay a server
    suggested is kept.

    With `budget`, `next()` gives None once a pause would end more than `budget` seconds
    after the backoff was made or last `reset()`: the caller gives up. `clock` and `rand`
    are for tests (and for a loop's own clock).

        backoff = Backoff(0.5, 10.0, budget=60.0)
        while True:
            try:
                return await attempt()
            except Unavailable:
                pause = backoff.next()
                if pause is None:
                    raise
                await asyncio.sleep(pause)
    """

    def __init__(
        self,
        first: float,
        cap: float,
        *,
        jitter: float = 0.25,
        budget: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if not first > 0:
            raise ValueError(f"the first pause must be more than 0 s, not {first!r}")
        if not cap >= first:
            raise ValueError(f"the cap ({cap!r} s) must be at least the first pause ({first!r} s)")
        if not 0 <= jitter <= 1:
            raise ValueError(f"jitter is a fraction from 0 to 1, not {jitter!r}")
        self.first = first
        self.cap = cap
        self.jitter = jitter
        self.budget = budget
        self._clock = clock
        self._rand = rand
        self._step = first
        self._deadline: float | None = None
        self.reset()

    def reset(self) -> None:
        """After a success: the next pause is the first again, the budget starts again."""
        self._step = self.first
        self._deadline = None if self.budget is None else self._clock() + self.budget

    def next(self) -> float | None:
        """The next pause in seconds; None when it would end past the budget."""
        pause = min(self.cap, self._step * (1 + self.jitter * self._rand()))
        if self._deadline is not None and self._clock() + pause > self._deadline:
            return None
        self._step = min(self.cap, self._step * 2)
        return pause

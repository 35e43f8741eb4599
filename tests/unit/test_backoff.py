"""The clients' one backoff: doubling pauses with jitter, a cap, a budget, a reset."""

from __future__ import annotations

import pytest

from service.backoff import Backoff


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_pauses_double_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 10.0, rand=lambda: 0.0)
    assert [backoff.next() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_jitter_lengthens_a_pause_by_at_most_its_fraction_and_never_past_the_cap() -> None:
    backoff = Backoff(1.0, 3.0, jitter=0.25, rand=lambda: 0.999999)
    pauses = [backoff.next() for _ in range(4)]
    assert pauses[0] == pytest.approx(1.25, abs=1e-5)
    assert pauses[1] == pytest.approx(2.5, abs=1e-5)
    assert pauses[2:] == [3.0, 3.0]  # the cap bounds the jittered pause too


def test_jitter_spreads_the_pauses_of_clients_that_started_together() -> None:
    first = [Backoff(1.0, 60.0).next() for _ in range(50)]
    assert all(1.0 <= p <= 1.25 for p in first if p is not None)
    assert len(set(first)) > 1


def test_a_budget_ends_the_pauses_and_a_reset_starts_it_again() -> None:
    clock = Clock()
    backoff = Backoff(1.0, 30.0, budget=5.0, clock=clock, rand=lambda: 0.0)
    assert backoff.next() == 1.0
    clock.now += 1.0
    assert backoff.next() == 2.0
    clock.now += 2.0
    assert backoff.next() is None  # 4 s more would end 7 s after the start
    backoff.reset()
    assert backoff.next() == 1.0  # the first pause again, and a new budget


@pytest.mark.parametrize(
    ("first", "cap", "jitter", "message"),
    [
        (0.0, 1.0, 0.25, "the first pause must be more than 0 s"),
        (2.0, 1.0, 0.25, "must be at least the first pause"),
        (1.0, 2.0, 1.5, "jitter is a fraction from 0 to 1"),
    ],
)
def test_bad_bounds_are_refused(first: float, cap: float, jitter: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Backoff(first, cap, jitter=jitter)

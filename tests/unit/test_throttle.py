"""The login throttle's table (service/web/auth.py): whose failures count together, the
window, and the bound on the addresses it remembers. Time is a clock the test drives."""

from __future__ import annotations

from service.web.auth import Throttle, address_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_ipv6_address_counts_by_its_64_and_an_ipv4_one_by_itself() -> None:
    assert (
        address_key("2001:db8:1:2:aaaa::1")
        == address_key("2001:db8:1:2:bbbb::9")
        == "2001:db8:1:2::/64"
    )
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.7") == address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("192.0.2.7") != address_key("192.0.2.8")
    assert address_key(None) == ""


def test_past_the_limit_an_address_waits_for_the_rest_of_its_window() -> None:
    clock = Clock()
    throttle = Throttle(limit=3, window=60, clock=clock)
    for _ in range(3):
        assert throttle.retry_after("a") is None
        throttle.asked("a")
        throttle.failed("a")
    clock.now += 20
    assert throttle.retry_after("a") == 40
    assert throttle.retry_after("b") is None
    clock.now += 40
    assert throttle.retry_after("a") is None  # a new window: its failures forgotten


def test_checks_asked_for_are_halved_per_window_gone_by() -> None:
    clock = Clock()
    throttle = Throttle(limit=3, window=10, clock=clock)
    for _ in range(8):
        throttle.asked("flood")
    assert throttle.asked("flood") == 8
    clock.now += 10
    assert throttle.asked("flood") == 4  # 9 halved, then this one
    clock.now += 30
    assert throttle.asked("flood") == 0  # 5 halved three times: forgotten
    assert throttle.asked("quiet") == 0


def test_the_table_remembers_at_most_its_size_the_oldest_forgotten_first() -> None:
    throttle = Throttle(limit=1, window=60, size=100, clock=Clock())
    throttle.failed("first")
    for n in range(1000):
        throttle.failed(f"10.0.{n // 256}.{n % 256}")
    assert len(throttle) == 100
    assert throttle.retry_after("first") is None  # forgotten
    assert throttle.retry_after("10.0.3.231") is not None  # the last one, remembered


def test_a_limit_of_zero_never_throttles() -> None:
    throttle = Throttle(limit=0, window=60, clock=Clock())
    for _ in range(50):
        throttle.failed("a")
    assert throttle.retry_after("a") is None

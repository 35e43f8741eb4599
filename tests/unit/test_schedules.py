"""What a schedule is and when it fires (service.schedules): pure, times given."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from service.model import GraphRef
from service.schedules import Definition, Schedule, parse_definition, plan

GRAPH = GraphRef("DEFAULT", "hugegraph")
PARIS = ZoneInfo("Europe/Paris")


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def at(text: str, zone: ZoneInfo = PARIS) -> int:
    return ms(datetime.fromisoformat(text).replace(tzinfo=zone))


def schedule(definition: Definition, next_fire_ms: int, anchor_ms: int = 0) -> Schedule:
    return Schedule(GRAPH, "s", definition, next_fire_ms=next_fire_ms, anchor_ms=anchor_ms)


def test_a_cron_expression_is_read_in_its_time_zone() -> None:
    daily = parse_definition({"type": "echo", "cron": "30 3 * * *", "timezone": "Europe/Paris"})
    assert daily.next_after(at("2026-12-01T03:00"), 0) == at("2026-12-01T03:30")
    # strictly after: at the fire time itself, the next day's
    assert daily.next_after(at("2026-12-01T03:30"), 0) == at("2026-12-02T03:30")
    nickname = parse_definition({"type": "echo", "cron": "@hourly"})
    start = ms(datetime(2026, 12, 1, 10, 15, tzinfo=UTC))
    assert nickname.next_after(start, 0) == ms(datetime(2026, 12, 1, 11, tzinfo=UTC))


def test_daylight_saving_changes() -> None:
    night = parse_definition({"type": "echo", "cron": "30 2 * * *", "timezone": "Europe/Paris"})
    # the last Sunday of March has no 02:30 in Paris: it fires at the change, 03:00 CEST
    spring = night.next_after(at("2026-03-29T01:00"), 0)
    assert spring == ms(datetime(2026, 3, 29, 1, 0, tzinfo=UTC))
    # the last Sunday of October has two: it fires once, then the next day
    autumn = night.next_after(at("2026-10-25T00:00"), 0)
    assert night.next_after(autumn, 0) == at("2026-10-26T02:30")


def test_an_interval_keeps_the_grid_of_its_creation() -> None:
    every = parse_definition({"type": "echo", "every": 60})
    anchor = 1_000_000
    assert every.next_after(anchor, anchor) == anchor + 60_000
    assert every.next_after(anchor + 61_000, anchor) == anchor + 120_000
    assert every.next_after(anchor + 120_000, anchor) == anchor + 180_000


def test_fire_times_within_the_grace_each_get_their_task() -> None:
    every = parse_definition({"type": "echo", "every": 1})
    firing = plan(schedule(every, 1000), now_ms=5500, grace_ms=60_000)
    assert firing.fires == (1000, 2000, 3000, 4000, 5000)
    assert firing.next_fire_ms == 6000 and not firing.missed
    assert plan(schedule(every, 6000), now_ms=5500, grace_ms=60_000).fires == ()


@pytest.mark.parametrize(("missed", "older"), [("once", [8000]), ("skip", [])])
def test_older_fire_times_are_missed_once_or_skipped(missed: str, older: list[int]) -> None:
    every = parse_definition({"type": "echo", "every": 1, "missed": missed})
    firing = plan(schedule(every, 1000), now_ms=10_500, grace_ms=2000)
    # 1000 … 8000 are older than 10_500 - 2000: missed; 9000 and 10_000 within the grace
    assert list(firing.fires) == [*older, 9000, 10_000]
    assert firing.missed and firing.next_fire_ms == 11_000


def test_a_month_of_missed_cron_fire_times_is_found_without_walking_them() -> None:
    daily = parse_definition({"type": "echo", "cron": "0 9 * * *", "timezone": "Europe/Paris"})
    firing = plan(schedule(daily, at("2026-11-01T09:00")), at("2026-12-01T12:00"), 60_000)
    assert firing.fires == (at("2026-12-01T09:00"),)
    assert firing.next_fire_ms == at("2026-12-02T09:00")


def test_a_round_plans_at_most_its_limit() -> None:
    every = parse_definition({"type": "echo", "every": 1})
    firing = plan(schedule(every, 1000), now_ms=100_000, grace_ms=10**9, limit=10)
    assert len(firing.fires) == 10 and firing.next_fire_ms == 11_000


def test_a_definition_survives_its_stored_form() -> None:
    definition = parse_definition(
        {"type": "echo", "cron": "0 3 * * 1-5", "timezone": "Asia/Tokyo", "input": {"a": [1]},
         "task_name": "weekday", "priority": 3, "max_retries": 2, "timeout": 5, "missed": "skip"}
    )  # fmt: skip
    assert Definition.from_json(definition.to_json()) == definition

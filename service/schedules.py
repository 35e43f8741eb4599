"""Schedules: a cron expression or a fixed interval that submits one task at each fire
time. What a schedule is and when it fires: pure, no I/O and no clock (times come in).

A schedule is declared in the configuration (`[schedules.NAME]`) or made over the API
(`{base}/schedules`); both give the same definition, checked by `parse_definition`. The
firing loop is service.scheduler; the store keeps each schedule's next fire time."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import cronsim
import orjson

from . import jsontext
from .model import GraphRef

#: what a schedule does with fire times missed while the service was down (or further
#: behind than the grace): "once" submits one task for all of them, "skip" none
MISSED_POLICIES = ("once", "skip")
#: where a schedule comes from: its definition in the configuration, or the API
SOURCES = ("config", "api")
#: a schedule's name: part of its URL and of its tasks' key
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
#: the shortest interval (seconds): one task a second per schedule at most
MIN_EVERY = 1.0
#: the longest interval (seconds): ten years, as the longest delay
MAX_EVERY = 10 * 365 * 24 * 3600.0
#: cron's nicknames, as the classic crons take them (the library reads five fields)
NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
#: the keys of a definition (the configuration's table, the API's body; the API's also
#: takes the schedule's `name`)
KEYS = (
    "type",
    "cron",
    "timezone",
    "every",
    "input",
    "task_name",
    "priority",
    "max_retries",
    "timeout",
    "missed",
    "graph",
    "paused",
)
#: the largest integer an option takes (as a submission's)
_MAX_INT = 2**31


@dataclass(frozen=True, slots=True)
class Definition:
    """What a schedule submits and when: a job type with its input and submission options,
    at the times of a cron expression (in `timezone`) or every `every` seconds."""

    type: str
    cron: str | None = None
    timezone: str = "UTC"
    every: float | None = None
    #: the job's input as JSON text (an object), or None
    input: str | None = None
    #: the tasks' name; None: the schedule's name
    task_name: str | None = None
    priority: int = 0
    #: None: the service's default_max_retries
    max_retries: int | None = None
    timeout: float | None = None
    missed: str = "once"

    def to_json(self) -> bytes:
        """As stored: the definition's fields, so a later version reads what it knows."""
        return orjson.dumps(
            {
                "type": self.type,
                "cron": self.cron,
                "timezone": self.timezone,
                "every": self.every,
                "input": self.input,
                "task_name": self.task_name,
                "priority": self.priority,
                "max_retries": self.max_retries,
                "timeout": self.timeout,
                "missed": self.missed,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Definition:
        data = orjson.loads(text)
        return cls(**{k: data[k] for k in data if k in _FIELDS})

    def next_after(self, after_ms: int, anchor_ms: int) -> int:
        """The first fire time strictly after `after_ms` (epoch ms). An interval counts
        from `anchor_ms` (when the schedule was made), so its fire times stay on one grid
        across restarts; a cron expression is read in its time zone (a time a daylight
        saving change skips fires at the change, one it repeats fires once)."""
        if self.every is not None:
            step = max(1, round(self.every * 1000))
            if after_ms < anchor_ms:
                return anchor_ms + step
            return anchor_ms + ((after_ms - anchor_ms) // step + 1) * step
        assert self.cron is not None
        zone = ZoneInfo(self.timezone)
        start = datetime.fromtimestamp(after_ms / 1000, UTC).astimezone(zone)
        fire = next(cronsim.CronSim(NICKNAMES.get(self.cron.strip(), self.cron), start))
        return int(fire.timestamp() * 1000)

    def describe(self) -> str:
        if self.every is not None:
            return f"every {self.every:g} s"
        return f"cron '{self.cron}' ({self.timezone})"


_FIELDS = frozenset(Definition.__slots__)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A stored schedule: its definition and where it stands."""

    graph: GraphRef
    name: str
    definition: Definition
    #: a paused schedule fires nothing; resumed, it fires from the next time after then
    paused: bool = False
    #: the next fire time (epoch ms); None while paused
    next_fire_ms: int | None = None
    #: where an interval's fire times count from (epoch ms)
    anchor_ms: int = 0
    #: one of SOURCES
    source: str = "api"
    create_ms: int = 0
    update_ms: int = 0
    #: the last fire time that submitted a task, and that task's id
    last_fire_ms: int | None = None
    last_task_id: int | None = None

    def evolve(self, **changes: Any) -> Schedule:
        return replace(self, **changes)

    def task_key(self, fire_ms: int) -> str:
        """The Idempotency-Key of the task of one fire time: one task per schedule and fire
        time in the graph, by the unique key the store keeps (in the insert's transaction).
        It holds line breaks, which no HTTP header can: no request can take it."""
        return f"schedule\n{self.name}\n{fire_ms}"

    def to_api(self) -> dict[str, Any]:
        d = self.definition
        body: dict[str, Any] = {
            "name": self.name,
            "type": d.type,
        }
        if d.cron is not None:
            body["cron"] = d.cron
            body["timezone"] = d.timezone
        else:
            body["every"] = d.every
        body["input"] = None if d.input is None else orjson.loads(d.input)
        body["task_name"] = d.task_name if d.task_name is not None else self.name
        body["priority"] = d.priority
        body["max_retries"] = d.max_retries
        body["timeout"] = d.timeout
        body["missed"] = d.missed
        body["paused"] = self.paused
        body["next_fire"] = self.next_fire_ms
        body["last_fire"] = self.last_fire_ms
        body["last_task_id"] = self.last_task_id
        body["source"] = self.source
        body["create"] = self.create_ms
        body["update"] = self.update_ms
        body["graphspace"] = self.graph.graphspace
        body["graph"] = self.graph.graph
        return body


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError(
            f"a schedule's name is 1 to 128 letters, digits, '_', '.' or '-', starting with "
            f"a letter or a digit; got {name!r}"
        )
    return name


def parse_definition(data: Mapping[str, Any]) -> Definition:
    """A definition from the configuration's table or the API's body (without `graph` and
    `paused`, which the caller reads); ValueError saying what is wrong."""
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}; expected {', '.join(KEYS)}")
    job_type = data.get("type")
    if not isinstance(job_type, str) or not job_type:
        raise ValueError("'type' (the job type it submits) is required")
    cron = data.get("cron")
    every = data.get("every")
    if (cron is None) == (every is None):
        raise ValueError("exactly one of 'cron' (a cron expression) or 'every' (seconds) is needed")
    timezone = data.get("timezone", "UTC")
    if not isinstance(timezone, str):
        raise ValueError(
            f"'timezone' must be a time zone name such as 'Europe/Paris', got {timezone!r}"
        )
    if cron is not None:
        if not isinstance(cron, str):
            raise ValueError(f"'cron' must be a string, got {cron!r}")
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"'timezone' {timezone!r} is not a known time zone") from None
        try:
            next(cronsim.CronSim(NICKNAMES.get(cron.strip(), cron), datetime.now(zone)))
        except (cronsim.CronSimError, StopIteration) as exc:
            raise ValueError(f"'cron' {cron!r} is not a cron expression: {exc}") from None
    else:
        if isinstance(every, bool) or not isinstance(every, int | float):
            raise ValueError(f"'every' must be a number of seconds, got {every!r}")
        if not math.isfinite(every) or not MIN_EVERY <= every <= MAX_EVERY:
            raise ValueError(
                f"'every' must be between {MIN_EVERY:g} and {MAX_EVERY:g} seconds, got {every!r}"
            )
        if "timezone" in data:
            raise ValueError("'timezone' goes with 'cron', not with 'every'")
        every = float(every)
    job_input = data.get("input")
    if job_input is not None and not isinstance(job_input, dict):
        raise ValueError(f"'input' must be a JSON object (the job's input), got {job_input!r}")
    task_name = data.get("task_name")
    if task_name is not None and (not isinstance(task_name, str) or len(task_name.encode()) > 256):
        raise ValueError(
            "'task_name' (the tasks' name) must be a string of at most 256 UTF-8 bytes"
        )
    priority = _integer(data, "priority", -_MAX_INT, _MAX_INT, 0)
    max_retries = _integer(data, "max_retries", 0, 1000, None)
    timeout = data.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ValueError(f"'timeout' must be a positive number of seconds, got {timeout!r}")
    missed = data.get("missed", "once")
    if missed not in MISSED_POLICIES:
        raise ValueError(f"'missed' must be one of {', '.join(MISSED_POLICIES)}, got {missed!r}")
    return Definition(
        type=job_type,
        cron=cron,
        timezone=timezone if cron is not None else "UTC",
        every=every,
        input=None if job_input is None else jsontext.dumps(job_input, "'input'").decode(),
        task_name=task_name,
        priority=priority or 0,
        max_retries=max_retries,
        timeout=None if timeout is None else float(timeout),
        missed=missed,
    )


def _integer(data: Mapping[str, Any], key: str, low: int, high: int, default: int | None) -> Any:
    value = data.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"'{key}' must be an integer from {low} to {high}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Firing:
    """What one claimed schedule does now: the fire times to submit a task for (in order),
    and the next fire time after them."""

    fires: tuple[int, ...]
    next_fire_ms: int
    #: whether fire times were missed (older than the grace): the policy said what they got
    missed: bool = False


def plan(schedule: Schedule, now_ms: int, grace_ms: int, limit: int = 1000) -> Firing:
    """The fire times of `schedule` that have come by `now_ms`, from its next one: each
    within `grace_ms` of now gets its task (a short stop, a busy moment: nothing is lost);
    older ones were missed, and its policy says what they get: "once", one task (for the
    latest of them), "skip", none. At most `limit` fire times are planned at once; the
    next planning goes on from there."""
    d = schedule.definition
    due = schedule.next_fire_ms
    if due is None or due > now_ms:
        return Firing((), due if due is not None else d.next_after(now_ms, schedule.anchor_ms))
    missed_until = now_ms - grace_ms  # a fire time at or before this one was missed
    fires: list[int] = []
    missed = due <= missed_until
    if missed:
        # the missed ones: found without walking them one by one (a schedule every second
        # that was stopped for a month)
        latest_missed = _latest_at_or_before(d, schedule.anchor_ms, due, missed_until)
        if d.missed == "once":
            fires.append(latest_missed)
        due = d.next_after(latest_missed, schedule.anchor_ms)
    while due <= now_ms and len(fires) < limit:
        fires.append(due)
        due = d.next_after(due, schedule.anchor_ms)
    return Firing(tuple(fires), due, missed)


def _latest_at_or_before(d: Definition, anchor_ms: int, first: int, limit_ms: int) -> int:
    """The latest fire time at or before `limit_ms`, `first` being one."""
    if d.every is not None:
        step = max(1, round(d.every * 1000))
        return first + (limit_ms - first) // step * step
    zone = ZoneInfo(d.timezone)
    start = datetime.fromtimestamp((limit_ms + 1) / 1000, UTC).astimezone(zone)
    expression = NICKNAMES.get((d.cron or "").strip(), d.cron or "")
    fire = int(next(cronsim.CronSim(expression, start, reverse=True)).timestamp() * 1000)
    return max(first, fire)

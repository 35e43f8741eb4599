"""Prometheus metrics of one service instance, kept in a registry of its own.

Each application has its own `Metrics` (tests run several apps in one process, and the
global default registry would make them collide). Most values come from the store's
commit listener (`Metrics.observe`), which sees every committed event in id order:
submissions, completions, retries, run time and the number of tasks in each status.

Several replicas on one store: every replica sees every replica's events. The counters
(submissions, completions, retries, run time) count what this replica committed (the
store tells which: `made_here`), so a sum over the replicas is the cluster's; the tasks by
status and the queue are the cluster's, the same on every replica (a dashboard takes
max(), not sum()); `sidetask_replica_info` names the replica. The
HTTP middleware (`service.web.access`) feeds the request metrics (`HttpStats`); `sse_subscribers` reads
the event bus's count at each scrape; `progress_coalesced` is for the supervisor's progress
coalescing to count; the webhook deliverer feeds `webhook_tries` and its answers' times, and
`webhook_in_flight` reads its count at each scrape.

Tasks by status: an event says where a task went, not where it came from, so the counts
are taken once from the store (`count_by_status`, in the background: start-up stays fast
with a million tasks) and then kept up to date with a one-byte-per-task record of the last
status this process saw for each task. A task that predates the process and changes for
the first time has no such record; its old status is then not known, and a recount is
scheduled (soon, but never more often than a small share of the store's reading time
allows, and only while such tasks keep changing — the retention purge of old tasks, mostly).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .model import (
    COMPLETED_STATUSES,
    EXECUTING_STATUSES,
    WAITING_STATUSES,
    Event,
    EventKind,
    Status,
)

log = logging.getLogger("sidetask.metrics")

# The `_created` series (a timestamp per counter and histogram) double the output and tell a
# scraper nothing it needs; the switch is process-wide in prometheus-client.
disable_created_metrics()  # type: ignore[no-untyped-call]

__all__ = ["CONTENT_TYPE", "Metrics", "TaskCounts"]

#: the classic text format every Prometheus reads (the metric names are all plain ASCII)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: a webhook receiver answers in milliseconds, or is cut off at webhook_timeout (10 s)
WEBHOOK_SECONDS_BUCKETS = (0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30, float("inf"))
#: what follows a try, as webhook_tries' `outcome`
WEBHOOK_OUTCOMES = ("delivered", "retry", "failed")
#: job run times run from milliseconds (echo) to hours (imports)
RUN_SECONDS_BUCKETS = (
    0.01,
    0.05,
    0.1,
    0.5,
    1,
    5,
    10,
    30,
    60,
    300,
    900,
    3600,
    4 * 3600,
    float("inf"),
)
HTTP_SECONDS_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    10,
    float("inf"),
)

#: the least time between two recounts of tasks by status, in seconds; a recount that
#: took long waits longer (RECOUNT_COST times its duration), so counting never costs
#: more than a twentieth of a reader connection
RECOUNT_GAP = 1.0
RECOUNT_COST = 20
#: a recount whose snapshot kept moving is retried this many times before it is taken as is
RECOUNT_ATTEMPTS = 3

_STATUSES = list(Status)
#: each status's value: Enum's `.value` is a property, several times slower than a lookup
_VALUE = {status: status.value for status in Status}
#: a task's status as one byte; 0 means "not seen by this process"
_CODE = {status: index + 1 for index, status in enumerate(_STATUSES)}

Counts = dict[tuple[str, str], int]
CountSource = Callable[[], Awaitable[Counts]]
LastEventId = Callable[[], Awaitable[int]]


class TaskCounts:
    """Tasks per (status, type), kept from committed events between counts of the store."""

    def __init__(self) -> None:
        self.counts: Counts = {}
        #: False until the first count of the store has finished: no numbers before that
        self.ready = False
        #: last status seen per task id, one byte each, from `_base` on; older ids in `_older`
        self._seen = bytearray()
        self._base: int | None = None
        self._older: dict[int, int] = {}
        #: (event id, old status, new status, type, old status known) while a count runs
        self._deferred: list[tuple[int, Status | None, Status | None, str, bool]] | None = []
        #: a change whose old status is not known happened since the last count
        self.stale = False
        #: total() per set of statuses, until the counts change (the supervisor asks for
        #: the waiting ones at every submission; the counts change once per commit)
        self._totals: dict[frozenset[Status], int] = {}

    # --- events ---

    def apply(self, event: Event) -> Status | None:
        """Records one event; returns the task's previous status when it is known."""
        return self.apply_all((event,))[0]

    def apply_all(self, events: Sequence[Event]) -> list[Status | None]:
        """Records the events of one commit, in order; returns each task's previous status
        where it is known (None otherwise). One loop with the record and the counts in
        locals: every replica applies every event of the cluster, so this is per event
        of every replica's work, not per event of its own."""
        olds: list[Status | None] = []
        if not events:
            return olds
        seen, older, counts, deferred = self._seen, self._older, self.counts, self._deferred
        if self._base is None:
            self._base = events[0].task_id
        base = self._base
        stale = changed = False
        for event in events:
            task_id = event.task_id
            index = task_id - base
            code = (
                (seen[index] if index < len(seen) else 0) if index >= 0 else older.get(task_id, 0)
            )
            old = _STATUSES[code - 1] if code else None
            kind = event.kind
            if kind is EventKind.CREATED:
                new: Status | None = Status.NEW
                old = None
                known = True
            elif kind is EventKind.DELETED:
                new = None
                known = old is not None
            elif kind is EventKind.STATUS and event.status is not None:
                new = event.status
                known = old is not None
            else:  # progress: the status does not change
                olds.append(old)
                continue
            olds.append(old)
            new_code = 0 if new is None else _CODE[new]
            if index >= 0:
                if index >= len(seen):
                    seen.extend(bytes(index + 1 - len(seen)))
                seen[index] = new_code
            elif new_code:
                older[task_id] = new_code
            else:
                older.pop(task_id, None)
            if deferred is not None:
                deferred.append((event.id, old, new, event.task_type, known))
                continue
            # _shift's arithmetic, inline: a call per event is most of what this loop saves
            if old is not None:
                key = (_VALUE[old], event.task_type)
                counts[key] = max(0, counts.get(key, 0) - 1)
            if new is not None:
                key = (_VALUE[new], event.task_type)
                counts[key] = counts.get(key, 0) + 1
            changed = True
            stale = stale or not known
        if changed:
            self._totals.clear()
            self.stale = self.stale or stale
        return olds

    def _shift(self, old: Status | None, new: Status | None, task_type: str) -> None:
        if self._totals:
            self._totals.clear()
        if old is not None:
            key = (_VALUE[old], task_type)
            self.counts[key] = max(0, self.counts.get(key, 0) - 1)
        if new is not None:
            key = (_VALUE[new], task_type)
            self.counts[key] = self.counts.get(key, 0) + 1

    # --- counting the store ---

    async def recount(self, count: CountSource, last_event_id: LastEventId) -> None:
        """Takes the store's counts, then replays the changes committed after them.

        The count is one SELECT; the event ids read before and after it fence it. When
        they differ, changes were committed while it ran and it is tried again; after
        the last try the changes in between are taken as counted, and another recount
        is scheduled to mend what that got wrong."""
        if self._deferred is None:
            self._deferred = []
        settled = False
        try:
            for _ in range(RECOUNT_ATTEMPTS):
                before = await last_event_id()
                counts = await count()
                after = await last_event_id()
                if before == after:
                    settled = True
                    break
        except BaseException:
            deferred, self._deferred = self._deferred, None
            for _, old, new, task_type, known in deferred:
                self._shift(old, new, task_type)
                self.stale = self.stale or not known
            raise
        deferred, self._deferred = self._deferred, None
        # a series seen before stays, at 0, rather than vanishing from the scrape
        self.counts = {key: 0 for key in self.counts} | counts
        self._totals.clear()
        self.stale = not settled
        for event_id, old, new, task_type, known in deferred:
            if event_id > after:
                self._shift(old, new, task_type)
                self.stale = self.stale or not known
        self.ready = True

    def total(self, statuses: frozenset[Status]) -> int:
        total = self._totals.get(statuses)
        if total is None:
            names = {s.value for s in statuses}
            total = sum(n for (status, _), n in self.counts.items() if status in names)
            self._totals[statuses] = total
        return total


class _TaskCollector(Collector):
    """`sidetask_tasks` and `sidetask_queue_depth`, read from the counts at each scrape."""

    def __init__(self, counts: TaskCounts) -> None:
        self._counts = counts

    def describe(self) -> Iterable[Metric]:
        return [
            GaugeMetricFamily(
                "sidetask_tasks", "Tasks stored, by status and type", labels=["status", "type"]
            ),
            GaugeMetricFamily(
                "sidetask_queue_depth",
                "Tasks waiting to run (new, scheduling, scheduled, queued, restoring)",
            ),
        ]

    def collect(self) -> Iterator[Metric]:
        if not self._counts.ready:
            return
        tasks = GaugeMetricFamily(
            "sidetask_tasks", "Tasks stored, by status and type", labels=["status", "type"]
        )
        for (status, task_type), count in sorted(self._counts.counts.items()):
            tasks.add_metric([status, task_type], count)
        yield tasks
        yield GaugeMetricFamily(
            "sidetask_queue_depth",
            "Tasks waiting to run (new, scheduling, scheduled, queued, restoring)",
            value=self._counts.total(WAITING_STATUSES),
        )


class _ReplicaCollector(Collector):
    """`sidetask_replica_info`: this replica's identity in the store (it changes when the
    replica is declared dead and rejoins) and its server_name, read at each scrape."""

    _NAME = ("sidetask_replica", "This replica: its identity in the shared store and server_name")

    def __init__(self, replica_id: Callable[[], str | None], server: str) -> None:
        self._replica_id = replica_id
        self._server = server

    def describe(self) -> Iterable[Metric]:
        return [InfoMetricFamily(*self._NAME)]

    def collect(self) -> Iterator[Metric]:
        replica = self._replica_id()
        if replica is not None:
            yield InfoMetricFamily(*self._NAME, value={"replica": replica, "server": self._server})


class _PausedCollector(Collector):
    """`sidetask_type_paused`: 1 for each paused job type, 0 for each other registered one
    (as the supervisor last read them from the store: what every replica obeys)."""

    _NAME = ("sidetask_type_paused", "Job types paused as a whole (1) or not (0), by type")

    def __init__(
        self, types: Callable[[], Iterable[str]], paused: Callable[[], Mapping[str, int]]
    ) -> None:
        self._types = types
        self._paused = paused

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(*self._NAME, labels=["type"])]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(*self._NAME, labels=["type"])
        paused = self._paused()
        for name in sorted({*self._types(), *paused}):
            family.add_metric([name], 1 if name in paused else 0)
        yield family


class HttpStats:
    """Requests by (method, route, status) and their durations by (method, route), kept as
    plain numbers and turned into a counter and a histogram at each scrape. This runs for
    every request: prometheus_client's labelled children would look the labels up, take a
    lock per value and walk the buckets in Python on each one."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        #: per (method, route): the count in each bucket of HTTP_SECONDS_BUCKETS (not
        #: cumulative), then the sum of the durations
        self.durations: dict[tuple[str, str], list[float]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, str(status))
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        counts = self.durations.get(key[:2])
        if counts is None:
            counts = self.durations[key[:2]] = [0.0] * (len(HTTP_SECONDS_BUCKETS) + 1)
        # the first bucket whose bound is at least `seconds` (the last bound is +Inf)
        counts[bisect.bisect_left(HTTP_SECONDS_BUCKETS, seconds)] += 1
        counts[-1] += seconds


_HTTP_REQUESTS = ("sidetask_http_requests", "HTTP requests, by method, route template and status")
_HTTP_SECONDS = (
    "sidetask_http_request_duration_seconds",
    "HTTP request latency, by method and route template (for event streams: how long they stayed open)",
)
_BUCKET_NAMES = [floatToGoString(bound) for bound in HTTP_SECONDS_BUCKETS]  # type: ignore[no-untyped-call]


class _HttpCollector(Collector):
    """`sidetask_http_requests_total` and `sidetask_http_request_duration_seconds`, written
    from HttpStats at each scrape as prometheus_client's Counter and Histogram write them."""

    def __init__(self, stats: HttpStats) -> None:
        self._stats = stats

    def describe(self) -> Iterable[Metric]:
        return [
            CounterMetricFamily(*_HTTP_REQUESTS, labels=["method", "route", "status"]),
            HistogramMetricFamily(*_HTTP_SECONDS, labels=["method", "route"]),
        ]

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(*_HTTP_REQUESTS, labels=["method", "route", "status"])
        for labels, count in list(self._stats.requests.items()):
            requests.add_metric(labels, count)
        yield requests
        seconds = HistogramMetricFamily(*_HTTP_SECONDS, labels=["method", "route"])
        for pair, counts in list(self._stats.durations.items()):
            cumulative = list(itertools.accumulate(counts[:-1]))
            seconds.add_metric(
                pair, list(zip(_BUCKET_NAMES, cumulative, strict=True)), sum_value=counts[-1]
            )
        yield seconds


class Metrics:
    """Every metric of one application. `app[METRICS]` holds it (service.web.keys)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        r = self.registry
        self.submissions = Counter(
            "sidetask_submissions", "Tasks this process created, by type", ["type"], registry=r
        )
        self.completions = Counter(
            "sidetask_completions",
            "Tasks this process brought to a completed status, by type and outcome (success, failed, cancelled)",
            ["type", "outcome"],
            registry=r,
        )
        self.retries = Counter(
            "sidetask_retries",
            "Tasks this process sent back to run again: after a failure, a user's retry, a restart",
            ["type"],
            registry=r,
        )
        self.run_seconds = Histogram(
            "sidetask_task_run_seconds",
            "Time from running to the end of the run, by type (runs this process started)",
            ["type"],
            buckets=RUN_SECONDS_BUCKETS,
            registry=r,
        )
        self.oldest_waiting_seconds = Gauge(
            "sidetask_oldest_waiting_seconds",
            "Seconds the longest-waiting due task has been waiting to run (0: none waits)",
            registry=r,
        )
        #: open event streams; read from the event bus at each scrape (service.web.metrics)
        self.sse_subscribers = Gauge(
            "sidetask_sse_subscribers", "Open Server-Sent Events streams", registry=r
        )
        #: progress reports replaced by a later one before they were written; follows the
        #: supervisor's own count at each scrape (sync_progress_coalesced)
        self._coalesced_seen = 0
        self.progress_coalesced = Counter(
            "sidetask_progress_coalesced",
            "Progress reports replaced by a later value before they were written",
            registry=r,
        )
        self.webhook_tries = Counter(
            "sidetask_webhook_tries",
            "Webhook POSTs this process sent and recorded, by what followed: delivered,"
            " retry (pending again) or failed (for good)",
            ["outcome"],
            registry=r,
        )
        for outcome in WEBHOOK_OUTCOMES:  # each outcome shown from the start, at 0
            self.webhook_tries.labels(outcome)
        self.webhook_seconds = Histogram(
            "sidetask_webhook_seconds",
            "Seconds from a webhook POST to its answer (or to the error that ended it)",
            buckets=WEBHOOK_SECONDS_BUCKETS,
            registry=r,
        )
        #: webhook POSTs waiting for their answer; read from the deliverer at each scrape
        self.webhook_in_flight = Gauge(
            "sidetask_webhook_in_flight", "Webhook POSTs waiting for their answer", registry=r
        )
        #: requests and their durations, fed by the middleware (service.web.access)
        self.http = HttpStats()
        r.register(_HttpCollector(self.http))
        self.tasks = TaskCounts()
        r.register(_TaskCollector(self.tasks))
        #: labelled children of the task metrics, by (id of the metric, label values)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        #: monotonic start of each run this process saw begin, by task id
        self._run_started: dict[int, float] = {}
        self._recount: asyncio.Task[None] | None = None
        #: when the next recount may start (time.monotonic)
        self._next_recount = 0.0
        self._count: CountSource | None = None
        self._last_event_id: LastEventId | None = None
        #: on a store several replicas share: whether this replica committed an event (its
        #: counters count only those); None: every event is this process's
        self._made_here: Callable[[int], bool] | None = None

    def per_replica(
        self, made_here: Callable[[int], bool], replica_id: Callable[[], str | None], server: str
    ) -> None:
        """On a store several replicas share: the counters count this replica's commits
        only, and `sidetask_replica_info` names it."""
        self._made_here = made_here
        self.registry.register(_ReplicaCollector(replica_id, server))

    def watch_paused(
        self, types: Callable[[], Iterable[str]], paused: Callable[[], Mapping[str, int]]
    ) -> None:
        """`sidetask_type_paused`, read from `paused` (the supervisor's) at each scrape."""
        self.registry.register(_PausedCollector(types, paused))

    def webhook_tried(self, outcome: str, seconds: float) -> None:
        """A webhook try whose answer was recorded: `outcome` one of WEBHOOK_OUTCOMES."""
        self.webhook_tries.labels(outcome).inc()
        self.webhook_seconds.observe(seconds)

    # --- the commit listener ---

    def sync_progress_coalesced(self, total: int) -> None:
        """Brings the counter up to the supervisor's count of coalesced progress reports."""
        if total > self._coalesced_seen:
            self.progress_coalesced.inc(total - self._coalesced_seen)
            self._coalesced_seen = total

    def observe(self, events: Sequence[Event]) -> None:
        """The store's commit listener: the events of one commit, in id order. The
        counters move once per commit and label set, by the number of its events; on a
        shared store, only for the events this replica committed (the tasks by status
        follow every event). A run is timed from this replica's `running` to its end,
        whoever wrote that (a replica declared dead sees its run taken over)."""
        olds = self.tasks.apply_all(events)
        made_here = self._made_here
        submitted: dict[str, int] = {}
        completed: dict[tuple[str, str], int] = {}
        retried: dict[str, int] = {}
        now = time.monotonic()
        for event, old in zip(events, olds, strict=True):
            kind = event.kind
            mine = made_here is None or made_here(event.id)
            if kind is EventKind.CREATED:
                if mine:
                    submitted[event.task_type] = submitted.get(event.task_type, 0) + 1
            elif kind is EventKind.DELETED:
                self._run_started.pop(event.task_id, None)
            elif kind is EventKind.STATUS and (status := event.status) is not None:
                if status is Status.RUNNING:
                    if mine:
                        self._run_started[event.task_id] = now
                elif status not in EXECUTING_STATUSES:
                    started = self._run_started.pop(event.task_id, None)
                    if started is not None:
                        self._child(self.run_seconds, event.task_type).observe(now - started)
                if not mine:
                    continue
                if status in COMPLETED_STATUSES:
                    key = (event.task_type, _VALUE[status])
                    completed[key] = completed.get(key, 0) + 1
                elif status is Status.RESTORING and old is not Status.PENDING:
                    # every way into `restoring` but a resume re-runs the task (task_retries
                    # + 1); when the old status is unknown, a resume of an older task too
                    retried[event.task_type] = retried.get(event.task_type, 0) + 1
        for task_type, n in submitted.items():
            self._child(self.submissions, task_type).inc(n)
        for (task_type, outcome), n in completed.items():
            self._child(self.completions, task_type, outcome).inc(n)
        for task_type, n in retried.items():
            self._child(self.retries, task_type).inc(n)
        if self.tasks.stale and self._count is not None:
            self._schedule_recount()

    def _child(self, metric: MetricWrapperBase, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once per label set."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # --- counts of the store ---

    def start(self, count: CountSource, last_event_id: LastEventId) -> None:
        """Counts the store in the background; later recounts use the same sources."""
        self._count = count
        self._last_event_id = last_event_id
        self._schedule_recount(at_once=True)

    def _schedule_recount(self, at_once: bool = False) -> None:
        if self._recount is not None and not self._recount.done():
            return
        self._recount = asyncio.create_task(
            self._run_recount(at_once), name="sidetask-metrics-count"
        )

    async def _run_recount(self, at_once: bool) -> None:
        assert self._count is not None and self._last_event_id is not None
        if not at_once:
            wait = self._next_recount - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        started = time.monotonic()
        try:
            await self.tasks.recount(self._count, self._last_event_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store cannot read now: try again later
            log.warning("counting tasks by status failed: %s", exc)
            self.tasks.stale = True
        finished = time.monotonic()
        self._next_recount = finished + max(RECOUNT_GAP, RECOUNT_COST * (finished - started))
        if self.tasks.stale:
            self._schedule_recount_later()

    def _schedule_recount_later(self) -> None:
        loop = asyncio.get_running_loop()
        loop.call_soon(self._schedule_recount)

    async def stop(self) -> None:
        if self._recount is not None:
            self._recount.cancel()
            await asyncio.gather(self._recount, return_exceptions=True)

    # --- exposition ---

    def render(self) -> bytes:
        """Every metric in Prometheus' text format."""
        return generate_latest(self.registry)

    def set_oldest_waiting(self, waiting_since_ms: Iterable[int], now_ms: int) -> None:
        oldest = min(waiting_since_ms, default=None)
        self.oldest_waiting_seconds.set(0 if oldest is None else max(0, now_ms - oldest) / 1000)

"""SSE fan-out: N subscribers of a graph's stream while one task publishes R events a second.

The subscribers are raw asyncio connections in this process (no per-event parsing: the
bytes are counted and the `task_update` of each event is read with one regex), so the
load client stays lighter than the server it measures. Lag is the time from the event's
write (its `task_update`, stamped when its transaction began) to its arrival here.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from service.config import Settings

from .server import BenchServer, run_loop
from .stats import percentile

EVENT_MARK = b"event: task.progress"
UPDATE = re.compile(rb'"task_update":(\d+)')


@dataclass
class Subscriber(asyncio.Protocol):
    path: str
    host: str
    lags: list[float]
    received: int = 0
    #: arrival of the first and the last progress event, epoch ms
    first: float = 0.0
    last: float = 0.0
    closed: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    _tail: bytes = b""

    transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass
        transport.write(f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())

    def data_received(self, data: bytes) -> None:
        now = time.time() * 1000
        # the mark may straddle two reads: keep a tail shorter than the mark
        window = self._tail + data
        found = window.count(EVENT_MARK)
        if found:
            self.received += found
            self.first = self.first or now
            self.last = now
        self._tail = window[-(len(EVENT_MARK) - 1) :]
        for match in UPDATE.finditer(data):
            self.lags.append(now - int(match.group(1)))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return dict(json.loads(response.read()))


async def _measure(
    server: BenchServer, subscribers: int, rate: float, seconds: float
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    protocols: list[Subscriber] = []
    path = "/graphs/hugegraph/events?type=ticker"
    for start in range(0, subscribers, 200):  # connect in waves so the backlog never overflows
        batch = await asyncio.gather(
            *(
                loop.create_connection(
                    lambda: Subscriber(path, f"127.0.0.1:{server.port}", lags),
                    "127.0.0.1",
                    server.port,
                )
                for _ in range(start, min(subscribers, start + 200))
            )
        )
        protocols.extend(protocol for _, protocol in batch)
    await asyncio.sleep(1.0)  # let every stream finish its (empty) replay and go live
    rss_idle = server.rss_mb()
    cpu = server.cpu_window().start()
    task = await asyncio.to_thread(
        _post, f"{server.url}/graphs/hugegraph/jobs/ticker", {"rate": rate, "seconds": seconds}
    )
    started = time.monotonic()
    rss_peak = rss_idle
    deadline = started + seconds + 30
    last_total = -1
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        rss_peak = max(rss_peak, server.rss_mb())
        total = sum(p.received for p in protocols)
        # done when the task's time is up and nothing more arrived for half a second
        if time.monotonic() - started > seconds + 1 and total == last_total:
            break
        last_total = total
    cpu.stop()
    firsts = [p.first for p in protocols if p.first]
    span_s = (max(p.last for p in protocols) - min(firsts)) / 1000 if firsts else 0.0
    final = await asyncio.to_thread(_get, f"{server.url}/graphs/hugegraph/tasks/{task['task_id']}")
    for protocol in protocols:
        if protocol.transport is not None:
            protocol.transport.close()
    published = _published(server, int(task["task_id"]))
    delivered = sum(min(p.received, published) for p in protocols)
    complete = sum(1 for p in protocols if p.received >= published)
    return {
        "subscribers": subscribers,
        "rate": rate,
        "seconds": seconds,
        "published": published,
        "task_status": final["task_status"],
        "deliveries_expected": published * subscribers,
        "deliveries": delivered,
        "subscribers_complete": complete,
        "delivered_per_s": delivered / span_s if span_s > 0 else 0.0,
        "lag_p50_ms": percentile(lags, 0.50),
        "lag_p99_ms": percentile(lags, 0.99),
        "lag_max_ms": max(lags) if lags else float("nan"),
        "rss_idle_mb": rss_idle,
        "rss_peak_mb": rss_peak,
        # from the ticker's submission to the last delivery, per event delivered
        "server_cpu": cpu.result(delivered),
    }


def _published(server: BenchServer, task_id: int) -> int:
    """Progress events the task really produced (reports close together are coalesced)."""
    with sqlite3.connect(server.db) as conn:
        (count,) = conn.execute(
            "SELECT COUNT(*) FROM events WHERE task_id = ? AND kind = 'task.progress'", (task_id,)
        ).fetchone()
    return int(count)


#: what this row changes in the shipped settings: a job type that publishes at a steady
#: rate, and every progress report written as an event (the shipped 0.1 s would coalesce
#: 100 reports a second into 10 events), so the source, not the bus, sets the rate
SETTINGS: dict[str, Any] = {"jobs": {"ticker": "benchlib.jobs:ticker"}, "progress_interval": 0.001}


#: connections a case needs beyond its subscribers (the ticker's POST, the reads after
#: it): each subscriber holds one, so past the shipped max_connections (4096) a case's
#: server gets max_connections = subscribers + this (else its POST is answered 503)
SPARE_CONNECTIONS = 64


def case_settings(subscribers: int) -> dict[str, Any]:
    """What a case's server runs with on top of the shipped settings."""
    needed = subscribers + SPARE_CONNECTIONS
    if needed <= Settings.max_connections:
        return dict(SETTINGS)
    return {**SETTINGS, "max_connections": needed}


def run_fanout(subscribers: int, rate: float, seconds: float, **settings: Any) -> dict[str, Any]:
    """Starts a fresh server, measures, stops it."""
    with BenchServer(**{**case_settings(subscribers), **settings}) as server:
        return run_loop(_measure(server, subscribers, rate, seconds))

"""GET /metrics (Prometheus text format), and the cleanup context that feeds the metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from .. import clock
from ..metrics import CONTENT_TYPE, Metrics
from ..model import WAITING_STATUSES
from .keys import EVENTS, METRICS, SETTINGS, STORE, SUPERVISOR, WEBHOOKS

#: waiting tasks read per graph and status to find the oldest one that is due
OLDEST_SCAN = 20


async def metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """Listens to the store's commits (before the supervisor starts, so recovery counts)
    and counts the stored tasks in the background."""
    metrics = app[METRICS]
    store = app[STORE]
    if store.replica_id is not None:  # several replicas: their counters count their own commits
        metrics.per_replica(store.made_here, lambda: store.replica_id, app[SETTINGS].server_name)
    store.add_listener(metrics.observe)
    deliverer = app.get(WEBHOOKS)
    if deliverer is not None:
        deliverer.on_try = metrics.webhook_tried
        metrics.webhook_in_flight.set_function(lambda: deliverer.in_flight)
    bus = app.get(EVENTS)
    if bus is not None:
        # the bus knows its subscribers: read at each scrape, the number cannot drift
        metrics.sse_subscribers.set_function(lambda: bus.subscriber_count)
    metrics.start(store.count_by_status, store.last_event_id)
    yield
    await metrics.stop()


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    metrics: Metrics = app[METRICS]
    await _update_oldest_waiting(app, metrics)
    supervisor = app.get(SUPERVISOR)
    if supervisor is not None:
        metrics.sync_progress_coalesced(supervisor.progress_coalesced)
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})


async def _update_oldest_waiting(app: web.Application, metrics: Metrics) -> None:
    """The age of the oldest due waiting task, read at scrape time: the oldest tasks of each
    graph and waiting status, by id, through the same indexed reads as GET …/tasks?status=."""
    store = app[STORE]
    now = clock.now_ms()
    since: list[int] = []
    for graph in app[SETTINGS].graph_refs():
        for status in sorted(WAITING_STATUSES):
            for task in await store.list_tasks(graph, status, OLDEST_SCAN, 0):
                if task.run_after_ms <= now:
                    # waiting since it became due, or since it entered this status
                    since.append(max(task.update_ms, task.run_after_ms))
                    break
    metrics.set_oldest_waiting(since, now)

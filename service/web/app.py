"""The application factory: resources in dependency order, one cleanup context each."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from ..config import Settings
from ..events import EventBus
from ..jobs.registry import build_registry
from ..leases import LeaseHub
from ..logs import log_events, own_log_events
from ..metrics import Metrics
from ..model import WAITING_STATUSES
from ..scheduler import Scheduler
from ..store import open_store
from ..supervisor import Supervisor
from ..webhooks import Deliverer, Targets
from .access import add_request_id, edge_middleware
from .auth import AUTH, Authenticator
from .keys import (
    EVENTS,
    LEASE_HUB,
    LEASES,
    METRICS,
    REGISTRY,
    SCHEDULE_STORE,
    SCHEDULER,
    SETTINGS,
    STORE,
    SUPERVISOR,
    WEBHOOKS,
)
from .metrics import metrics_ctx
from .origin import PagePolicy
from .routes import add_routes
from .sse import close_streams, events_ctx

log = logging.getLogger("sidetask.web")


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = open_store(
        settings.db, settings.db_schema, settings.replica_timeout, settings.max_waiting
    )
    await store.open()
    app[STORE] = store
    app[LEASES] = store
    app[SCHEDULE_STORE] = store
    # one log line per task transition; with several replicas, by the one that made it
    store.add_listener(log_events if store.replica_id is None else own_log_events(store.made_here))
    yield
    await store.close()


async def _webhooks_ctx(app: web.Application) -> AsyncIterator[None]:
    """Before the supervisor: its first status changes (recovery's) write deliveries too.
    Stopped after it has drained, so the deliveries its last changes wrote may go out."""
    settings = app[SETTINGS]
    store = app[STORE]
    deliverer = Deliverer(settings, store, Targets.from_settings(settings))
    store.set_outbox(deliverer.outbox)
    store.add_listener(deliverer.on_events)
    app[WEBHOOKS] = deliverer
    await deliverer.start()
    yield
    await deliverer.stop()


async def _supervisor_ctx(app: web.Application) -> AsyncIterator[None]:
    tasks = app[METRICS].tasks  # counted from the committed events (service.metrics)
    supervisor = Supervisor(
        app[SETTINGS],
        app[STORE],
        app[REGISTRY],
        waiting=lambda: tasks.total(WAITING_STATUSES) if tasks.ready else None,
    )
    app[SUPERVISOR] = supervisor
    app[STORE].add_listener(supervisor.on_events)  # other processes' cancels and submissions
    app[METRICS].watch_paused(app[REGISTRY].names, lambda: supervisor.paused_types)
    await supervisor.start()
    yield
    # The listening socket is closed by now: no new work arrives while running jobs drain.
    await supervisor.drain()


async def _scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the supervisor, which submits the schedules' tasks; stopped before its drain."""
    scheduler = Scheduler(app[SETTINGS], app[SCHEDULE_STORE], app[SUPERVISOR])
    app[SCHEDULER] = scheduler
    await scheduler.start()
    yield
    await scheduler.stop()


async def _lease_hub_ctx(app: web.Application) -> AsyncIterator[None]:
    hub = LeaseHub(app[SETTINGS], app[LEASES], app[SUPERVISOR].retry_delay)
    app[LEASE_HUB] = hub
    await hub.start()
    yield
    await hub.stop()


async def _close_auth(app: web.Application) -> None:
    app[AUTH].pool.close()


async def _release_claims(app: web.Application) -> None:
    app[LEASE_HUB].release_waiters()


def create_app(settings: Settings) -> web.Application:
    authenticator = Authenticator.from_settings(settings)
    metrics = Metrics()
    app = web.Application(
        # every check, the error bodies, the access line and the metrics (in that order)
        middlewares=[edge_middleware(PagePolicy.from_settings(settings), authenticator, metrics)],
        client_max_size=settings.max_body_bytes,
        # what aiohttp's HTTP parser allows before a 431 (service.web.limits answers it)
        handler_args={
            "max_line_size": settings.max_header_bytes,
            "max_field_size": settings.max_header_bytes,
        },
    )
    app[SETTINGS] = settings
    app[AUTH] = authenticator
    app[REGISTRY] = build_registry(settings)
    app[EVENTS] = EventBus()
    app[METRICS] = metrics
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_webhooks_ctx)
    app.cleanup_ctx.append(events_ctx)
    app.cleanup_ctx.append(metrics_ctx)  # before the supervisor: recovery is counted
    app.cleanup_ctx.append(_supervisor_ctx)
    app.cleanup_ctx.append(_lease_hub_ctx)
    app.cleanup_ctx.append(_scheduler_ctx)
    # on_shutdown runs before the cleanup contexts: streams end before the drain starts
    app.on_shutdown.append(close_streams)
    app.on_shutdown.append(_release_claims)  # waiting claims end (204) before the drain
    app.on_cleanup.append(_close_auth)  # after the cleanup contexts: no request is left
    app.on_response_prepare.append(add_request_id)
    add_routes(app)
    return app

"""The application factory: resources in dependency order, one cleanup context each."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from ..config import Settings
from ..events import EventBus
from ..jobs import build_registry
from ..store import open_store
from ..supervisor import Supervisor
from .errors import error_middleware
from .keys import EVENTS, REGISTRY, SETTINGS, STORE, SUPERVISOR
from .routes import add_routes
from .sse import close_streams, events_ctx

log = logging.getLogger("sidetask.web")

#: HugeGraph accepts task inputs up to 16 MiB; the body may carry one plus its JSON framing
MAX_BODY_BYTES = 16 * 1024 * 1024 + 64 * 1024


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = open_store(app[SETTINGS].db)
    await store.open()
    app[STORE] = store
    yield
    await store.close()


async def _supervisor_ctx(app: web.Application) -> AsyncIterator[None]:
    supervisor = Supervisor(app[SETTINGS], app[STORE], app[REGISTRY])
    app[SUPERVISOR] = supervisor
    await supervisor.start()
    yield
    # The listening socket is closed by now: no new work arrives while running jobs drain.
    await supervisor.drain()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY_BYTES)
    app[SETTINGS] = settings
    app[REGISTRY] = build_registry(settings)
    app[EVENTS] = EventBus()
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(events_ctx)
    app.cleanup_ctx.append(_supervisor_ctx)
    # on_shutdown runs before the cleanup contexts: streams end before the drain starts
    app.on_shutdown.append(close_streams)
    add_routes(app)
    return app

"""Running the service in this process: logging, the event loop, signals, the HTTP server."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from .config import Settings
from .web import create_app

log = logging.getLogger("sidetask")


def _install_uvloop() -> None:
    try:
        import uvloop  # the optional `speed` extra
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve(settings: Settings) -> int:
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    _install_uvloop()
    app = create_app(settings)
    log.info("sidetask serving on http://%s:%d with %s", settings.host, settings.port, settings.db)
    # run_app turns SIGTERM and SIGINT into a graceful exit: the socket closes, then the
    # cleanup contexts drain the supervisor (SPEC 9) and close the store.
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=None,
        shutdown_timeout=settings.drain_grace,
    )
    return 0

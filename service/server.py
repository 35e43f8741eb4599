"""Running the service in this process: logging, the event loop, signals, the HTTP server."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal

from aiohttp import web

from .config import ConfigError, Settings
from .web import create_app
from .web.limits import JsonErrorRunner

log = logging.getLogger("sidetask")


def _install_uvloop() -> None:
    try:
        import uvloop  # the optional `speed` extra
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the service on this machine. A name other than
    `localhost` is not trusted to: it may resolve to any address."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings, insecure: bool) -> None:
    """Authentication may stay off only while the service is bound to loopback."""
    if settings.auth_enabled or insecure or is_loopback(settings.host):
        return
    raise ConfigError(
        f"host {settings.host!r} is not a loopback address and no users or tokens are "
        "configured, so anyone who reaches it could submit and cancel jobs. Configure "
        "users (`sidetask hash-password NAME` prints a line for `[users]`) or tokens "
        "(`sidetask new-token NAME` prints one for `[tokens]`) — README, \"Access and "
        "limits\" — or pass --insecure to serve without authentication all the same"
    )


async def _run(settings: Settings) -> None:
    app = create_app(settings)
    runner = JsonErrorRunner(app, access_log=None, shutdown_timeout=settings.drain_grace)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        log.info(
            "sidetask serving on http://%s:%d with %s (authentication %s)",
            settings.host,
            settings.port,
            settings.db,
            "on" if settings.auth_enabled else "off",
        )
        await stop.wait()
    finally:
        # The socket closes, then the cleanup contexts drain the supervisor (SPEC 9) and
        # close the store; open connections get `drain_grace` to finish.
        await runner.cleanup()


def serve(settings: Settings, *, insecure: bool = False) -> int:
    check_exposure(settings, insecure)
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if insecure and not settings.auth_enabled and not is_loopback(settings.host):
        log.warning("serving %s without authentication (--insecure)", settings.host)
    _install_uvloop()
    asyncio.run(_run(settings))
    return 0

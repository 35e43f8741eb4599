"""Running the service in this process: logging, the event loop, signals, the HTTP server."""

from __future__ import annotations

import asyncio
import errno
import gc
import ipaddress
import logging
import resource
import signal
import sys
from typing import Any

from aiohttp import web

from .config import ConfigError, Settings
from .store import describe_db
from .web import create_app
from .web.limits import JsonErrorRunner, Occasional

log = logging.getLogger("sidetask")

#: at most one log line per this many seconds about an exhausted resource at accept
RESOURCE_LOG_INTERVAL = 60.0
#: what asyncio's accept reports through the loop's exception handler when it runs out
#: of descriptors, kernel memory or buffers (and retries a second later)
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: descriptors kept for what is not a client connection: the database, logs, jobs' pipes
SPARE_FILES = 128


class ResourceLog:
    """The loop's exception handler. asyncio reports an exhausted resource at accept (EMFILE:
    out of descriptors) through it for each failed accept — with a traceback each, and up to
    a backlog's worth at a time under a flood of connections. This logs one line per
    `interval` instead, saying how many went unlogged; everything else goes to the default
    handler."""

    def __init__(self, interval: float) -> None:
        self._occasional = Occasional(interval)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if not isinstance(exc, OSError) or exc.errno not in RESOURCE_ERRNOS:
            loop.default_exception_handler(context)
            return
        unlogged = self._occasional.due()
        if unlogged is None:
            return
        since = f" ({unlogged} more since the last report)" if unlogged else ""
        log.error(
            "%s: %s%s; new connections wait until it is free again (max_connections "
            "keeps clients within the open files limit, %s); next report in %g s at the earliest",
            context.get("message", "out of a system resource"),
            exc.strerror or exc,
            since,
            _open_files_limit(),
            self._occasional.interval,
        )


def _open_files_limit() -> str:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return "unlimited" if soft == resource.RLIM_INFINITY else str(soft)


def fit_open_files(max_connections: int) -> None:
    """Raise the soft limit on open files to hold `max_connections` clients and a spare,
    within the hard limit; warn when even that is too low."""
    if max_connections <= 0:
        return
    needed = max_connections + SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft < needed:
        log.warning(
            "the open files limit is %d: fewer than max_connections %d and %d spare; past about %d "
            "connections new ones wait at accept instead of getting a 503 (raise `ulimit -n`, or "
            "lower max_connections)",
            soft,
            max_connections,
            SPARE_FILES,
            max(0, soft - SPARE_FILES),
        )


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
        '(`sidetask new-token NAME` prints one for `[tokens]`) — README, "Access and '
        'limits" — or pass --insecure to serve without authentication all the same'
    )


async def _run(settings: Settings) -> None:
    asyncio.get_running_loop().set_exception_handler(ResourceLog(RESOURCE_LOG_INTERVAL))
    fit_open_files(settings.max_connections)
    app = create_app(settings)
    runner = JsonErrorRunner(
        app,
        access_log=None,
        shutdown_timeout=settings.drain_grace,
        max_connections=settings.max_connections,
        header_timeout=settings.header_timeout,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        settle_gc()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        log.info(
            "sidetask serving on http://%s:%d with %s (authentication %s)",
            settings.host,
            settings.port,
            describe_db(settings.db),
            "on" if settings.auth_enabled else "off",
        )
        await stop.wait()
    finally:
        # The socket closes, then the cleanup contexts drain the supervisor (SPEC 9) and
        # close the store; open connections get `drain_grace` to finish.
        await runner.cleanup()


#: how long a thread holds the GIL before another waiting for it is let in
GIL_SWITCH_SECONDS = 0.0005
#: container objects allocated (net) before the youngest generation is collected;
#: CPython's default is 700
GC_YOUNG_THRESHOLD = 10_000


def settle_gc() -> None:
    """Once started: what start-up made (modules, the app, the store's state) lives as long
    as the process, so it is frozen out of every later collection, and the youngest
    generation is collected every GC_YOUNG_THRESHOLD allocations instead of 700. Every
    task allocates hundreds of short-lived containers (rows, events, requests); with the
    defaults the collector took about 50 us of CPU per task on PostgreSQL (scripts/bench
    row 9: 500 ms of collections in a run of 10,000 tasks), with these about 2."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def serve(settings: Settings, *, insecure: bool = False) -> int:
    check_exposure(settings, insecure)
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if insecure and not settings.auth_enabled and not is_loopback(settings.host):
        log.warning("serving %s without authentication (--insecure)", settings.host)
    _install_uvloop()
    # The store's writer thread needs the GIL back after every SQLite call; while the event
    # loop holds it, the writer waits out a switch interval (5 ms by default) before it is
    # forced over. A shorter interval keeps that hand-off chain short: measured 1,300 ->
    # 1,700 tasks/s end to end (scripts/bench --rows e2e).
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    provider = None
    if settings.tracing:
        from . import otel  # the optional extra, only when tracing is on

        provider = otel.install_provider(settings.server_name)
    try:
        asyncio.run(_run(settings))
    finally:
        if provider is not None:
            provider.shutdown()  # the spans still batched go out
    return 0

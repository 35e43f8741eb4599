"""Authentication and per-graph grants: HTTP Basic users and Bearer tokens (README, "Access
and limits").

Authentication is on when the configuration has users or tokens. Then every request but
`/versions`, `/health`, `/ready`, `/openapi.json`, the `/docs` page (and `/metrics` with `metrics_public`)
needs credentials; without valid ones it gets a 401 with the JSON error body and a
`WWW-Authenticate` challenge.

Passwords are PBKDF2 hashes with many iterations: a quarter of a second of CPU each. That is
the point against guessing, but a keep-alive client sends its credentials with every request,
so a successful verification is remembered, keyed by an HMAC of the whole Authorization
header under a key made at start (the cache holds no password, and its keys cannot be
computed from outside). A verification runs in a thread, so the event loop serves on; a
failed one is never remembered. An unknown user costs as much as a wrong password, so the
time of a refusal does not tell which names exist.

Floods of wrong credentials (README, "Access and limits"):

- `CheckPool` runs the slow checks on `auth_threads` threads of its own, never more at once;
  at most `auth_queue` wait for a thread, the ones from addresses that asked for fewer checks
  lately first, then the newest (a client that is not flooding goes ahead of the flood). A check past that bound is answered 503 with Retry-After at once: the queue, and
  the wait of a correct login behind a flood, stay bounded.
- `Throttle` counts failed checks per client address (an IPv6 address by its /64). Past
  `auth_max_failures` within `auth_failure_window` seconds the address is answered 429 with
  Retry-After until the window ends, without running a check, so a correct password from it
  is refused too: a guess that happens to be right must not be told apart from a wrong one.
  The table is bounded (`THROTTLE_SIZE` addresses, the oldest forgotten first).
- A remembered header is answered before either, without waiting — but from a throttled
  address only when that address verified it itself, or the cache would be an oracle that
  answers guesses for free.

A user or token listed in `grants` reaches only its graphs. Any other graph answers as a
graph that does not exist (404, not 403): a caller learns nothing about graphs it may not
use. `/events` gives such a caller its graphs' events only; claiming work for an external
worker (which takes tasks of every graph) is a 403 for it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import heapq
import hmac
import ipaddress
import itertools
import math
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from aiohttp import web

from .. import auth
from ..config import Settings, parse_graph
from ..errors import Forbidden, NotFound
from ..model import GraphRef
from .docs import PATHS as DOCS_PATHS
from .params import DEFAULT_GRAPHSPACE
from .responses import error_response

#: routes that answer without credentials: clients read /versions before they log in
#: (pyhugegraph does, without credentials), probes read /health and /ready; the /docs
#: page renders /openapi.json, which is open too
OPEN_PATHS = frozenset({"/versions", "/health", "/ready", "/openapi.json", *DOCS_PATHS})
REALM = "sidetask"
#: successful verifications remembered (each entry: 32 bytes of key and the principal)
CACHE_SIZE = 4096
#: the route that hands out tasks of every graph
CLAIM_ROUTE = "/workers/{worker}/claim"
#: pausing or resuming a job type (in every graph)
TYPE_ROUTE = "/types/{type}"
#: addresses whose failures the throttle remembers at most
THROTTLE_SIZE = 10_000
#: addresses remembered per cached header, for the answers to a throttled address
CACHE_ADDRESSES = 8
#: what a check refused for a full queue is told to wait, in seconds
BUSY_RETRY_AFTER = 1

T = TypeVar("T")


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user's or a token's name, and the graphs it may reach."""

    name: str
    #: None: every graph
    graphs: frozenset[GraphRef] | None = None

    def reaches(self, graph: GraphRef) -> bool:
        return self.graphs is None or graph in self.graphs


PRINCIPAL = web.RequestKey("principal", Principal)


class _Refused(Exception):
    """Credentials missing or wrong: a 401 saying which."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Failed(_Refused):
    """Credentials checked and wrong: a 401, and a failure counted against the address."""


class _NotNow(Exception):
    """Not checked: too many checks waiting (503) or this address failed too often (429)."""

    def __init__(self, status: int, kind: str, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.retry_after = status, kind, message, retry_after


def default_threads() -> int:
    """Half of the CPUs this process may use, at least one: the other half serves requests
    and runs jobs while a flood of wrong passwords keeps the checks busy."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, cpus // 2)


class CheckPool:
    """Slow credential checks on `threads` threads of their own, at most `queue` waiting.

    A waiting check holds a place by its priority: first the number of checks its address
    asked for lately (fewer first: a client that has not been flooding goes ahead of the
    flood), then the newest first — under a flood the oldest waiters are the likeliest to
    have given up, and a login that has just arrived is served rather than queued behind
    every attacker's first try. When the queue is full a newcomer takes the place of the
    worst waiting check, which is refused (503), unless the newcomer's address asked for
    more than every waiting one's: then it is refused itself. A thread's slot is freed when
    its check has ended, not when its caller stops waiting (a client that hangs up does not
    let more checks run at once)."""

    def __init__(self, threads: int, queue: int) -> None:
        self.threads = threads
        self.queue = queue
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="sidetask-auth")
        self._free = threads
        #: a heap of (asked, -arrival, turn): the best first
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def close(self) -> None:
        """Ends the threads once their checks are done; checks not yet started are dropped
        (the app is closing: no one waits for them)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def run(self, check: Callable[[], T], priority: int = 0) -> T:
        """`check()` on a thread of the pool, once a thread is free and this caller's turn
        has come; _NotNow (503) when the queue has no place for it."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
        else:
            await self._wait_turn(priority)
        loop = asyncio.get_running_loop()
        future = self._executor.submit(check)

        def ended(_: object) -> None:
            try:
                loop.call_soon_threadsafe(self._release)
            except RuntimeError:  # the loop has closed: nothing waits for the slot
                pass

        future.add_done_callback(ended)
        return await asyncio.wrap_future(future)

    async def _wait_turn(self, priority: int) -> None:
        entry = (priority, -next(self._arrivals), asyncio.get_running_loop().create_future())
        if len(self._waiting) >= self.queue:
            worst = max(self._waiting, key=lambda e: e[:2]) if self._waiting else None
            if worst is None or worst[0] < priority:
                raise _busy()
            self._waiting.remove(worst)
            heapq.heapify(self._waiting)
            worst[2].set_exception(_busy())
        heapq.heappush(self._waiting, entry)
        turn = entry[2]
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                self._release()  # the slot was handed over just as the caller left
            elif entry in self._waiting:
                self._waiting.remove(entry)
                heapq.heapify(self._waiting)
            raise

    def _release(self) -> None:
        """A thread is free: the best waiting check gets it, or it is counted free."""
        while self._waiting:
            _, _, turn = heapq.heappop(self._waiting)
            if not turn.done():
                turn.set_result(None)
                return
        self._free += 1


def _busy() -> _NotNow:
    return _NotNow(
        503,
        "ServiceUnavailableException",
        "Too many credential checks are waiting; retry after Retry-After seconds",
        BUSY_RETRY_AFTER,
    )


def address_key(remote: str | None) -> str:
    """Whose failures these are: the client's address, an IPv6 one by its /64 (one
    subscriber's share of addresses)."""
    if not remote:
        return ""
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    if isinstance(address, ipaddress.IPv6Address):  # an IPv4 address in IPv6 form
        return str(address.ipv4_mapped)
    return str(address)


@dataclass
class _Failures:
    #: monotonic time of the window's start: the first check asked for
    since: float
    #: failed checks in the window
    count: int = 0
    #: checks asked for, refused for a full queue ones included: in the window, plus half
    #: of those of the window before
    asked: int = 0


class Throttle:
    """Checks asked for and failed per address, in a fixed window from the first asked for;
    past `limit` failures the address is refused until the window ends (0: never)."""

    def __init__(
        self,
        limit: int,
        window: float,
        size: int = THROTTLE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.size = size
        self._clock = clock
        self._table: OrderedDict[str, _Failures] = OrderedDict()

    def _current(self, address: str) -> _Failures | None:
        """The address's counts in the current window; a window that has ended starts anew,
        its failures forgotten and its checks asked for halved for each window gone by (a
        flooding address stays behind the others after its window ends)."""
        entry = self._table.get(address)
        if entry is None:
            return None
        now = self._clock()
        windows = int((now - entry.since) // self.window)
        if windows > 0:
            entry.since, entry.count, entry.asked = now, 0, entry.asked >> min(windows, 63)
            if entry.asked == 0:
                del self._table[address]
                return None
        return entry

    def asked(self, address: str) -> int:
        """Counts a check asked for by `address`; returns how many it asked for before in
        the window: its place in the queue (a client that has not been flooding goes first)."""
        entry = self._entry(address)
        entry.asked += 1
        return entry.asked - 1

    def retry_after(self, address: str) -> int | None:
        """Seconds until `address` may be checked again; None: it may be now."""
        if self.limit <= 0:
            return None
        entry = self._current(address)
        if entry is None or entry.count < self.limit:
            return None
        return max(1, math.ceil(entry.since + self.window - self._clock()))

    def failed(self, address: str) -> None:
        self._entry(address).count += 1

    def _entry(self, address: str) -> _Failures:
        entry = self._current(address)
        if entry is None:
            entry = self._table[address] = _Failures(self._clock())
            while len(self._table) > self.size:
                self._table.popitem(last=False)
        else:
            self._table.move_to_end(address)
        return entry

    def __len__(self) -> int:
        return len(self._table)


@dataclass
class _Known:
    """A remembered header: who it is, and the addresses (the latest few) that sent it
    verified or remembered while not throttled."""

    principal: Principal
    addresses: dict[str, None] = field(default_factory=dict)

    def seen_from(self, address: str) -> None:
        self.addresses.pop(address, None)
        self.addresses[address] = None
        while len(self.addresses) > CACHE_ADDRESSES:
            del self.addresses[next(iter(self.addresses))]


class Authenticator:
    """Checks an Authorization header against the configured users and tokens."""

    def __init__(
        self,
        users: Mapping[str, str],
        tokens: Mapping[str, str],
        grants: Mapping[str, Iterable[str]],
        metrics_public: bool = False,
        *,
        threads: int = 0,
        queue: int = 8,
        max_failures: int = 10,
        failure_window: float = 60.0,
    ) -> None:
        self.users = {name: auth.parse_hash(encoded) for name, encoded in users.items()}
        self.tokens = {name: auth.parse_hash(encoded) for name, encoded in tokens.items()}
        self.enabled = bool(self.users or self.tokens)
        self.open_paths = OPEN_PATHS | ({"/metrics"} if metrics_public else set())
        self._graphs: dict[str, frozenset[GraphRef] | None] = {}
        for name, granted in grants.items():
            texts = list(granted)
            self._graphs[name] = None if "*" in texts else frozenset(parse_graph(t) for t in texts)
        # An unknown user is checked against this, as long as a real check takes.
        iterations = max((h.iterations for h in self.users.values()), default=1)
        self._decoy = auth.ParsedHash(
            auth.PBKDF2, iterations, secrets.token_bytes(16), secrets.token_bytes(32)
        )
        self._cache_key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, _Known] = OrderedDict()
        self.pool = CheckPool(threads or default_threads(), queue)
        self.throttle = Throttle(max_failures, failure_window)
        challenges = []
        if self.users:
            challenges.append(f'Basic realm="{REALM}", charset="UTF-8"')
        if self.tokens:
            challenges.append(f'Bearer realm="{REALM}"')
        self.challenges = tuple(challenges)

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        return cls(
            settings.users,
            settings.tokens,
            settings.grants,
            settings.metrics_public,
            threads=settings.auth_threads,
            queue=settings.auth_queue,
            max_failures=settings.auth_max_failures,
            failure_window=settings.auth_failure_window,
        )

    def principal(self, name: str) -> Principal:
        return Principal(name, self._graphs.get(name))

    async def authenticate(self, header: str | None, remote: str | None = None) -> Principal:
        """Who sends `header`, from the client address `remote`. _Refused: a 401; _NotNow: a
        503 (checks queue full) or a 429 (this address failed too often)."""
        if header is None or not header.strip():
            raise _Refused("Authentication required: send HTTP Basic credentials or a Bearer token")
        address = address_key(remote)
        key = hmac.new(
            self._cache_key, header.encode("utf-8", "surrogateescape"), hashlib.sha256
        ).digest()
        known = self._cache.get(key)
        throttled = self.throttle.retry_after(address)
        if known is not None and (throttled is None or address in known.addresses):
            self._cache.move_to_end(key)
            if throttled is None:
                known.seen_from(address)
            return known.principal
        if throttled is not None:
            raise _NotNow(
                429,
                "TooManyRequestsException",
                f"Too many failed logins from this address; retry after {throttled} s",
                throttled,
            )
        scheme, _, credentials = header.strip().partition(" ")
        scheme = scheme.lower()
        priority = self.throttle.asked(address)
        try:
            if scheme == "basic" and self.users:
                name = await self._basic(credentials.strip(), priority)
            elif scheme == "bearer" and self.tokens:
                name = await self._bearer(credentials.strip(), priority)
            else:
                accepted = " or ".join(c.split(" ", 1)[0] for c in self.challenges)
                raise _Refused(
                    f"The Authorization scheme '{scheme}' is not accepted here; use {accepted}"
                )
        except _Failed as failed:
            self.throttle.failed(address)
            raise _Refused(failed.message) from None
        principal = self.principal(name)
        entry = self._cache[key] = _Known(principal)
        entry.seen_from(address)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return principal

    async def _basic(self, credentials: str, priority: int) -> str:
        try:
            if not credentials:
                raise ValueError("no credentials")
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, ValueError):
            raise _Refused(
                "The Authorization header is not valid HTTP Basic credentials "
                "(base64 of user:password, in UTF-8)"
            ) from None
        user, colon, password = decoded.partition(":")
        if not colon:
            raise _Refused(
                "The HTTP Basic credentials have no ':' between the user and the password"
            )
        stored = self.users.get(user)
        # The check runs for an unknown user too, against the decoy: the same time either way.
        matched = await self.pool.run(
            functools.partial(auth.verify, password, stored or self._decoy), priority
        )
        if stored is None or not matched:
            raise _Failed("Invalid user name or password")
        return user

    async def _bearer(self, token: str, priority: int) -> str:
        if not token:
            raise _Refused("The Bearer token is empty")
        found = None
        slow = []
        for name, stored in self.tokens.items():
            if stored.algorithm == auth.SHA256:
                # every token is compared, so the time does not tell which one matched
                if auth.verify(token, stored) and found is None:
                    found = name
            else:
                slow.append((name, stored))
        for name, stored in slow:
            if found is None and await self.pool.run(
                functools.partial(auth.verify, token, stored), priority
            ):
                found = name
        if found is None:
            raise _Failed("Invalid Bearer token")
        return found


AUTH = web.AppKey("auth", Authenticator)


def principal_of(request: web.Request) -> Principal | None:
    """Who is calling; None when authentication is off (every graph is reachable)."""
    return request.get(PRINCIPAL)


def reachable_graphs(request: web.Request) -> frozenset[GraphRef] | None:
    """The graphs the caller may reach; None: every graph."""
    principal = principal_of(request)
    return None if principal is None else principal.graphs


def reaches(request: web.Request, graph: GraphRef) -> bool:
    principal = principal_of(request)
    return principal is None or principal.reaches(graph)


def _unauthorized(authenticator: Authenticator, message: str) -> web.Response:
    response = error_response(401, "NotAuthorizedException", message)
    for challenge in authenticator.challenges:
        response.headers.add("WWW-Authenticate", challenge)
    return response


def guards(authenticator: Authenticator, request: web.Request) -> bool:
    """Whether `request` needs credentials: authentication is on and its path is not open."""
    return authenticator.enabled and request.path not in authenticator.open_paths


async def auth_refusal(authenticator: Authenticator, request: web.Request) -> web.Response | None:
    """Checks the credentials of a request `guards` says needs them (run by
    service.web.access's middleware): the answer when they are refused, None when it may
    go on, its principal recorded. A graph or route its grants do not reach raises."""
    try:
        principal = await authenticator.authenticate(
            request.headers.get("Authorization"), request.remote
        )
    except _Refused as refused:
        return _unauthorized(authenticator, refused.message)
    except _NotNow as refused:
        return error_response(
            refused.status,
            refused.kind,
            refused.message,
            headers={"Retry-After": str(refused.retry_after)},
        )
    request[PRINCIPAL] = principal
    if principal.graphs is not None:
        match = request.match_info
        if "graph" in match:
            graph = GraphRef(match.get("graphspace", DEFAULT_GRAPHSPACE), match["graph"])
            if graph not in principal.graphs:
                # the answer an undeclared graph gets: nothing tells the graph exists
                raise NotFound(f"Graph '{graph.graph}' does not exist")
        route = match.route.resource
        if route is not None and route.canonical == CLAIM_ROUTE:
            raise Forbidden(
                f"'{principal.name}' may reach only some graphs; a claim takes tasks of "
                'every graph, so it needs the grant "*"'
            )
        if route is not None and route.canonical == TYPE_ROUTE and request.method != "GET":
            raise Forbidden(
                f"'{principal.name}' may reach only some graphs; pausing or resuming a job "
                'type does so in every graph, so it needs the grant "*"'
            )
    return None

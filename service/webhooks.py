"""Webhooks: the deliverer that sends the outbox's deliveries (written by the stores in the
transaction of each matching status change), their signature, and the check of a target
against the allow-list (README, "Webhooks").

A delivery is claimed under a lease (one process at a time; a dead one's claims come due
again when their lease ends), POSTed with a bounded number in flight, and its answer
recorded: 2xx delivered; 410, a 3xx (redirects are not followed) or another 4xx but 408
and 429 failed for good; anything else (5xx, 408, 429, a timeout, no connection) tried
again with exponential backoff until webhook_retry_for has passed since the change.

A target is resolved here, each address checked (loopback, private, link-local, cloud
metadata and every other non-public range refused unless webhook_allow allows it), and
the connection made to the addresses checked: a name that resolves to something else at
connect time (DNS rebinding) cannot slip past."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import socket
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from . import clock
from .backoff import Backoff
from .config import Settings, parse_webhook_allow
from .errors import BadRequest, SidetaskError
from .model import (
    CALLBACK_HOOK,
    DeliveryAnswer,
    DeliveryState,
    DueDelivery,
    Event,
    EventKind,
    HookRule,
    Outbox,
    Status,
)
from .store import Store

__all__ = [
    "Deliverer",
    "TargetRefused",
    "Targets",
    "outbox_of",
    "sign",
    "verify",
]

log = logging.getLogger("sidetask.webhooks")

#: the headers of a delivery
SIGNATURE_HEADER = "Sidetask-Signature"
DELIVERY_HEADER = "Sidetask-Delivery"
EVENT_HEADER = "Sidetask-Event"
#: seconds a claim lasts past the attempt's own timeout: the answer is recorded well within
#: it, and a claim whose process died comes due again after it
LEASE_MARGIN = 5.0
#: the longest the deliverer sleeps without looking for due deliveries (retries of other
#: processes' deliveries, claims that ran out)
POLL_SECONDS = 1.0
#: characters of a URL a callback may have
MAX_URL_CHARS = 2048
#: seconds a callback's host may take to resolve at submission
RESOLVE_SECONDS = 5.0
#: the answers that are a permanent failure among the 4xx are all but these
RETRIED_4XX = frozenset({408, 429})
#: what a receiver should accept as the signature's age, in seconds (verify's default)
TOLERANCE_SECONDS = 300
#: the shared address space (RFC 6598), where some clouds put their metadata service
#: (100.100.100.200); ipaddress counts it as neither private nor global
_SHARED = ipaddress.ip_network("100.64.0.0/10")


# --- the signature ---


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The Sidetask-Signature header: `t=<unix seconds>,v1=<hex HMAC-SHA256 of
    "<t>." + body with the secret>` (the scheme of Stripe's and GitHub's webhooks)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    tolerance: float = TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Whether `header` (Sidetask-Signature) signs `body` with `secret` and is at most
    `tolerance` seconds old: what a receiver checks before it trusts a delivery."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    stamp = parts.get("t", "")
    if not stamp.isdigit() or "v1" not in parts:
        return False
    if abs((time.time() if now is None else now) - int(stamp)) > tolerance:
        return False
    expected = sign(secret, int(stamp), body).rpartition("v1=")[2]
    return hmac.compare_digest(expected, parts["v1"])


# --- targets ---


class TargetRefused(OSError):
    """A target the allow-list refuses (an OSError, so aiohttp hands it on from a resolver
    as the cause of its connection error)."""


def _refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an address is not a public one a webhook may reach by default; None: it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (where cloud metadata services answer)"
    if address.is_private:
        return "a private address"
    if address in _SHARED:
        return "a shared (carrier-grade NAT) address, where some clouds' metadata answers"
    if address.is_multicast or address.is_unspecified or address.is_reserved:
        return "not a unicast address"
    if not address.is_global:
        return "not a public address"
    return None


class Targets:
    """The allow-list: which URLs a webhook may be sent to (webhook_schemes) and which
    non-public hosts and networks it may reach (webhook_allow)."""

    def __init__(self, allow: Sequence[str], schemes: Sequence[str]) -> None:
        self.schemes = tuple(schemes)
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._names: list[str] = []
        for text in allow:
            entry = parse_webhook_allow(text)
            if isinstance(entry, str):
                self._names.append(entry)
            else:
                self._networks.append(entry)

    @classmethod
    def from_settings(cls, settings: Settings) -> Targets:
        return cls(settings.webhook_allow, settings.webhook_schemes)

    def split(self, url: str) -> tuple[str, str, int]:
        """(scheme, host, port) of a target URL, or TargetRefused saying what is wrong
        with it (a scheme not allowed, no host, credentials in it)."""
        if len(url) > MAX_URL_CHARS:
            raise TargetRefused(f"the URL is longer than {MAX_URL_CHARS} characters")
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise TargetRefused(f"{url!r} is not a URL: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in self.schemes:
            raise TargetRefused(
                f"the scheme {scheme or '(none)'!r} is not allowed (webhook_schemes: "
                f"{', '.join(self.schemes) or 'none'})"
            )
        if not parts.hostname:
            raise TargetRefused(f"{url!r} has no host")
        if parts.username is not None or parts.password is not None:
            raise TargetRefused("credentials in the URL are not allowed (use the signature)")
        default = 443 if scheme == "https" else 80
        return scheme, parts.hostname.lower().rstrip("."), default if port is None else port

    def _name_allowed(self, host: str) -> bool:
        for entry in self._names:
            if entry.startswith("*."):
                if host.endswith(entry[1:]):
                    return True
            elif host == entry:
                return True
        return False

    def check_address(self, host: str, address: str) -> None:
        """TargetRefused unless `address` (what `host` resolved to) may be reached: a
        public one, one in an allowed network, or any address of an allowed name."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            raise TargetRefused(f"{host!r} resolved to {address!r}, not an address") from None
        why = _refusal(ip)
        if why is None or self._name_allowed(host):
            return
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        if any(ip in net or (mapped is not None and mapped in net) for net in self._networks):
            return
        shown = str(ip) if host.strip("[]") == str(ip) else f"{host!r} resolves to {ip}, which"
        raise TargetRefused(f"{shown} is {why}, and webhook_allow does not allow it")

    def check_literal(self, host: str) -> bool:
        """For a host that is an IP address (aiohttp connects to one without resolving
        it): checks it and returns True; a name: False."""
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        self.check_address(host, host.strip("[]"))
        return True

    async def resolve(self, host: str, port: int, family: int = socket.AF_UNSPEC) -> list[Any]:
        """The addresses `host` resolves to, every one checked: one refused refuses the
        host (a name answering a public and a private address is not trusted with
        either). getaddrinfo's entries."""
        if self.check_literal(host):
            return [(socket.AF_INET6 if ":" in host else socket.AF_INET, host.strip("[]"))]
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(
                host, port, family=family, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except OSError as exc:
            raise TargetRefused(f"{host!r} does not resolve: {exc.strerror or exc}") from None
        if not infos:
            raise TargetRefused(f"{host!r} does not resolve")
        found = []
        for fam, _, _, _, sockaddr in infos:
            self.check_address(host, str(sockaddr[0]))
            found.append((fam, str(sockaddr[0])))
        return found

    async def check_callback(self, url: str) -> None:
        """A submission's `callback`: 400 saying why, when the allow-list refuses it."""
        try:
            _, host, port = self.split(url)
            async with asyncio.timeout(RESOLVE_SECONDS):
                await self.resolve(host, port)
        except TargetRefused as exc:
            raise BadRequest(f"The callback {url!r} is refused: {exc}") from None
        except TimeoutError:
            raise BadRequest(
                f"The callback {url!r} is refused: its host did not resolve within "
                f"{RESOLVE_SECONDS:g} s"
            ) from None


class _CheckedResolver(AbstractResolver):
    """aiohttp's resolver for the deliverer: the addresses it connects to are those
    Targets.resolve checked, in the same lookup (no second one that could answer
    otherwise)."""

    def __init__(self, targets: Targets) -> None:
        self._targets = targets

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._targets.resolve(host, port, family)
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": fam,
                "proto": socket.IPPROTO_TCP,
                "flags": socket.AI_NUMERICHOST,
            }
            for fam, address in found
        ]

    async def close(self) -> None:
        return None


# --- the outbox and the deliverer ---


def outbox_of(settings: Settings) -> Outbox | None:
    """What the stores write deliveries for, from the settings; None: no hook is
    configured and callbacks are off (no callback_secret)."""
    rules = tuple(
        HookRule(
            hook.name, hook.url, frozenset(Status(s) for s in hook.statuses), frozenset(hook.types)
        )
        for hook in settings.hooks
    )
    callbacks = (
        frozenset(Status(s) for s in settings.callback_statuses)
        if settings.callback_secret
        else frozenset()
    )
    if not rules and not callbacks:
        return None
    return Outbox(rules, callbacks)


def _retry_after(value: str | None) -> float | None:
    """A Retry-After of seconds (its date form is not read)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


#: a try's outcome in the metrics, by the state it left its delivery in
_TRY_OUTCOMES = {
    DeliveryState.DELIVERED: "delivered",
    DeliveryState.PENDING: "retry",
    DeliveryState.FAILED: "failed",
}


class Deliverer:
    """Sends pending deliveries: claims due ones while it has room (webhook_concurrency in
    flight), POSTs each, records the answer and what follows it. Woken by the commit of a
    status change that may have written one, and every POLL_SECONDS otherwise."""

    def __init__(self, settings: Settings, store: Store, targets: Targets) -> None:
        self.settings = settings
        self.store = store
        self.targets = targets
        self.outbox = outbox_of(settings)
        self._secrets = {hook.name: hook.secret for hook in settings.hooks}
        if settings.callback_secret:
            self._secrets[CALLBACK_HOOK] = settings.callback_secret
        self._lease_ms = int((settings.webhook_timeout + LEASE_MARGIN) * 1000)
        self._wakeup = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        #: the earliest retry this process set (epoch ms): it wakes for it
        self._next_ms: int | None = None
        #: told of each try whose answer was recorded: what followed (delivered, retry,
        #: failed) and the seconds the POST took (service.web.metrics sets it)
        self.on_try: Callable[[str, float], None] | None = None
        self._user_agent = "sidetask-webhooks"

    async def check_callback(self, url: str) -> None:
        """A submission's `callback` option: 400 when callbacks are off or the allow-list
        refuses the URL."""
        if not self.settings.callback_secret:
            raise BadRequest(
                "The parameter 'callback' needs callbacks to be configured: set "
                "callback_secret (the key that signs them)"
            )
        await self.targets.check_callback(url)

    # --- lifecycle ---

    async def start(self) -> None:
        """Starts sending, if anything can write a delivery (or one is left pending)."""
        if self.outbox is None and await self.store.next_delivery_ms() is None:
            return
        from . import __version__

        self._user_agent = f"sidetask/{__version__}"
        connector = aiohttp.TCPConnector(
            resolver=_CheckedResolver(self.targets),
            use_dns_cache=False,  # every new connection resolves, and checks, again
            limit=self.settings.webhook_concurrency,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.settings.webhook_timeout),
            trust_env=False,  # no proxy from the environment: the check is of the target
            auto_decompress=False,
        )
        self._loop = asyncio.create_task(self._run(), name="sidetask-webhooks")

    async def stop(self) -> None:
        """Stops: attempts in flight are cancelled (their claims run out, and another
        process, or this one's next start, sends them again: at least once)."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None
        for task in list(self._in_flight):
            task.cancel()
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def on_events(self, events: Sequence[Event]) -> None:
        """A commit listener: a status change that may have written a delivery wakes it."""
        outbox = self.outbox
        if outbox is None or self._loop is None:
            return
        wanted = outbox.statuses
        for event in events:
            if event.kind is EventKind.STATUS and event.status in wanted:
                self._wakeup.set()
                return

    # --- the loop ---

    async def _run(self) -> None:
        failures = Backoff(0.1, POLL_SECONDS * 5)
        while True:
            # Cleared first: a commit or a freed slot after this point wakes the wait below.
            self._wakeup.clear()
            room = self.settings.webhook_concurrency - len(self._in_flight)
            if room <= 0:
                await self._wakeup.wait()  # every slot is taken: until one frees (_done)
                continue
            try:
                claimed = await self.store.claim_deliveries(room, self._lease_ms)
                failures.reset()
            except SidetaskError as exc:  # the store cannot write now: later
                log.warning("webhook deliveries not claimed: %s", exc.message)
                await asyncio.sleep(failures.next() or POLL_SECONDS)
                continue
            for delivery in claimed:
                task = asyncio.create_task(self._deliver(delivery))
                self._in_flight.add(task)
                task.add_done_callback(self._done)
            if len(claimed) < room:
                # none more is due now: until a commit that may have written one, this
                # process's next retry, or the poll (other processes' retries, lost claims)
                await self._wait(self._pause())

    def _pause(self) -> float:
        """Seconds until this process's next retry is due, at most POLL_SECONDS."""
        if self._next_ms is None:
            return POLL_SECONDS
        left = (self._next_ms - clock.now_ms()) / 1000
        if left <= 0:
            self._next_ms = None
        return max(0.0, min(POLL_SECONDS, left))

    async def _wait(self, seconds: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wakeup.wait()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._wakeup.set()  # a slot is free
        if not task.cancelled() and task.exception() is not None:
            log.error("a webhook delivery failed unexpectedly", exc_info=task.exception())

    # --- one attempt ---

    @property
    def in_flight(self) -> int:
        """POSTs waiting for their answer."""
        return len(self._in_flight)

    async def _deliver(self, delivery: DueDelivery) -> None:
        started = time.monotonic()
        code, error, retry_after = await self._post(delivery)
        now = clock.now_ms()
        took = time.monotonic() - started
        answer = DeliveryAnswer(now, code, error, int(took * 1000))
        state, next_ms = self._next_step(delivery, code, error, retry_after, now)
        try:
            recorded = await self.store.record_delivery(delivery, answer, state, next_ms)
        except SidetaskError as exc:
            # not recorded: its claim runs out and it is sent again (at least once)
            log.warning("webhook delivery %s: answer not recorded: %s", delivery.uid, exc.message)
            return
        if not recorded:
            log.info("webhook delivery %s: its claim had run out, another took it", delivery.uid)
            return
        if self.on_try is not None:
            self.on_try(_TRY_OUTCOMES[state], took)
        if state is DeliveryState.PENDING and next_ms is not None:
            self._next_ms = next_ms if self._next_ms is None else min(self._next_ms, next_ms)
        outcome = f"HTTP {code}" if code is not None else error
        if state is DeliveryState.FAILED:
            log.warning(
                "webhook delivery %s of task %d to %s failed for good: %s",
                delivery.uid,
                delivery.task_id,
                delivery.hook,
                outcome,
            )

    async def _post(self, delivery: DueDelivery) -> tuple[int | None, str | None, float | None]:
        """(HTTP status, None, Retry-After) or (None, the error, None). A refused target's
        error starts with "refused:", a permanent failure."""
        secret = self._secrets.get(delivery.hook)
        if secret is None:
            return None, f"refused: the hook {delivery.hook!r} is no longer configured", None
        session = self._session
        assert session is not None
        try:
            _, host, _ = self.targets.split(delivery.url)
            self.targets.check_literal(host)
        except TargetRefused as exc:
            return None, f"refused: {exc}", None
        headers = {
            "Content-Type": "application/json",
            "User-Agent": self._user_agent,
            SIGNATURE_HEADER: sign(secret, int(time.time()), delivery.body),
            DELIVERY_HEADER: delivery.uid,
            EVENT_HEADER: delivery.status,
        }
        try:
            async with session.post(
                delivery.url, data=delivery.body, headers=headers, allow_redirects=False
            ) as response:
                return response.status, None, _retry_after(response.headers.get("Retry-After"))
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, TargetRefused):
                return None, f"refused: {exc.os_error}", None
            return None, f"no connection: {exc.os_error.strerror or exc.os_error}", None
        except TimeoutError:
            return None, f"no answer within {self.settings.webhook_timeout:g} s", None
        except aiohttp.ClientError as exc:
            return None, f"{type(exc).__name__}: {exc}", None

    def _next_step(
        self,
        delivery: DueDelivery,
        code: int | None,
        error: str | None,
        retry_after: float | None,
        now: int,
    ) -> tuple[DeliveryState, int | None]:
        """What follows an answer: delivered, failed for good, or pending until when."""
        if code is not None and 200 <= code < 300:
            return DeliveryState.DELIVERED, None
        permanent = (code is not None and code < 500 and code not in RETRIED_4XX) or (
            error is not None and error.startswith("refused:")
        )
        if permanent:
            return DeliveryState.FAILED, None
        pause = self.retry_pause(delivery.attempts + 1)
        if retry_after is not None:
            pause = max(pause, min(retry_after, self.settings.webhook_backoff_max))
        next_ms = now + int(pause * 1000)
        if next_ms > delivery.create_ms + int(self.settings.webhook_retry_for * 1000):
            return DeliveryState.FAILED, None
        return DeliveryState.PENDING, next_ms

    def retry_pause(self, tries: int) -> float:
        """Seconds before the try after the `tries`-th: webhook_backoff doubling each
        time, with jitter, up to webhook_backoff_max."""
        settings = self.settings
        backoff = Backoff(
            settings.webhook_backoff, max(settings.webhook_backoff, settings.webhook_backoff_max)
        )
        pause = backoff.first
        for _ in range(min(tries, 64)):
            pause = backoff.next() or backoff.cap
        return pause

"""Requests from web pages: the Host a request names and the page that sent it (README,
"Access and limits").

Bound to loopback without credentials, the service answers whatever reaches its port, and
every page the user's browser opens can send a request there. Two checks stop a page from
driving it; clients that are not browsers (curl, pyhugegraph, the Java client,
service.client, the worker library) send neither a foreign Host nor an Origin, and pass.

- **Host.** A page whose name is re-pointed at 127.0.0.1 (DNS rebinding) talks to the
  service as its own origin: the browser lets it read every answer. Its requests still
  carry its name, `Host: evil.example:8080`. So every request, on every route and the
  probes included, must name a loopback host (`localhost`, `*.localhost`, 127.0.0.0/8,
  `[::1]`), the address the service is bound to, or an entry of `allowed_hosts`; otherwise
  it is a 421 Misdirected Request (the request was sent to a name this service does not
  answer to; 403 would read as missing rights). The port is not compared: a forwarded port
  (`podman -p 9000:8080`) changes it, and a page cannot pick the port the browser connects
  to. Bound to all addresses (`0.0.0.0`, `::`), any IP address is accepted as Host:
  rebinding works through a name, and a page whose Host is an address was served from
  that address. A name is accepted only when listed; `"*"` accepts any Host.
- **Origin.** A page of another origin may send a request without asking (a form POST,
  `fetch` with a text/plain body in no-cors mode): the browser sends it with an `Origin`
  header and hides the answer from the page, but the request has done its work. A request
  whose `Origin` is not the service's own (the scheme of the connection, the host and port
  of its Host header) nor in `allowed_origins` is a 403, whatever its method; `Origin:
  null` (a sandboxed frame, a file, a redirect across sites) is never the service's own.
  A state-changing request (any method but GET, HEAD and OPTIONS) that carries no Origin
  is refused too when `Sec-Fetch-Site` says `cross-site` or `same-site`: another port of
  localhost is the same site but another origin.

Reads need no more than that. A page of another origin can make the browser send a GET
(an image, a script tag) but cannot read the answer: the service sends no CORS headers, so
the same-origin policy holds, and no GET changes anything. A GET that carries a foreign
Origin is a CORS read (`fetch`, `EventSource`) the browser would hide from its page
anyway; refusing it spares the service the work, an event stream kept open for a page
that cannot read it above all. A GET without one, a link followed from another site
included, is served: that is how a person opens the dashboard from a bookmark or a wiki.

This runs before anything else looks at the request (inside the access log and the error
rendering, which only wrap it: service.web.access): before the limits and authentication, and before any
body is read. With authentication on it matters as much, since a browser sends remembered
Basic credentials with a foreign page's request too.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
from dataclasses import dataclass

from aiohttp import web

from ..config import ORIGIN_PORTS, Settings, normal_host, parse_allowed_host, parse_origin
from .responses import error_response

log = logging.getLogger("sidetask.access")

#: methods that change nothing: a page of another origin may have them sent, without Origin
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: what Sec-Fetch-Site says of a page of another origin
FOREIGN_SITES = frozenset({"cross-site", "same-site"})
#: bound to one of these, the service is reached at any of the machine's addresses
WILDCARDS = frozenset({"0.0.0.0", "::"})
_PORT = re.compile(r"[0-9]{1,5}")
#: how much of a refused Host or Origin the answer repeats
MAX_SHOWN = 200


#: Host and Origin values parsed, remembered: a client sends the same few (the few
#: microseconds of ipaddress parsing each would otherwise be paid per request)
PARSED_CACHE = 256


@functools.lru_cache(maxsize=PARSED_CACHE)
def split_host(value: str) -> tuple[str, int | None]:
    """(host, port) of a Host header, the host as config.normal_host writes it; ValueError
    when the value is not `host[:port]` or `[IPv6][:port]`."""
    if value.startswith("["):
        end = value.find("]") + 1
        host, rest = value[:end], value[end:]
        if not end or (rest and not rest.startswith(":")):
            raise ValueError(value)
        port = rest[1:]
    else:
        host, _, port = value.partition(":")
    if port and not (_PORT.fullmatch(port) and int(port) <= 65535):
        raise ValueError(value)
    return normal_host(host), int(port) if port else None


_origin_of = functools.lru_cache(maxsize=PARSED_CACHE)(parse_origin)


@functools.lru_cache(maxsize=PARSED_CACHE)
def is_loopback_host(host: str) -> bool:
    """`host` as config.normal_host writes it names this machine: localhost, a name under
    .localhost (which browsers resolve to loopback themselves), or a loopback address."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback  # ::ffff:127.0.0.1 (3.11 says False)
    return address.is_loopback


def _shown(text: str) -> str:
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "…"


@dataclass(frozen=True)
class Refusal:
    status: int
    kind: str
    message: str


@dataclass(frozen=True)
class PagePolicy:
    """Which Host a request may name and which Origin it may come from, read from the
    settings once."""

    #: "*" in allowed_hosts
    any_host: bool = False
    #: bound to every address: any IP address is a Host
    any_address: bool = False
    #: names and addresses accepted, the bound one included
    hosts: frozenset[str] = frozenset()
    #: ".example.org" for each "*.example.org"
    suffixes: tuple[str, ...] = ()
    #: (scheme, host, port) of allowed_origins
    origins: frozenset[tuple[str, str, int]] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> PagePolicy:
        entries = {parse_allowed_host(text) for text in settings.allowed_hosts}
        try:
            bound = normal_host(settings.host)
        except ValueError:  # not a name a Host can carry; loopback and the list still work
            bound = None
        hosts = {e for e in entries if not e.startswith("*")}
        if bound is not None and bound not in WILDCARDS:
            hosts.add(bound)
        return cls(
            any_host="*" in entries,
            any_address=bound in WILDCARDS,
            hosts=frozenset(hosts),
            suffixes=tuple(sorted(e[1:] for e in entries if e.startswith("*."))),
            origins=frozenset(parse_origin(text) for text in settings.allowed_origins),
        )

    def admits_host(self, host: str) -> bool:
        if self.any_host or host in self.hosts or is_loopback_host(host):
            return True
        if any(host.endswith(suffix) for suffix in self.suffixes):
            return True
        if self.any_address:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                return False
            return True
        return False

    def refusal(
        self,
        method: str,
        scheme: str,
        host_header: str | None,
        origin: str | None,
        fetch_site: str | None,
    ) -> Refusal | None:
        """Why a request with these headers is refused, or None when it is not."""
        own: tuple[str, str, int] | None = None
        # A request without Host comes from no browser (they all send it): nothing to check.
        if host_header is not None:
            try:
                host, port = split_host(host_header)
            except ValueError:
                return Refusal(
                    400,
                    "IllegalArgumentException",
                    f"The Host header '{_shown(host_header)}' is not a host name or an IP address with an optional port",
                )
            if not self.admits_host(host):
                return Refusal(
                    421,
                    "MisdirectedRequestException",
                    f"The Host '{_shown(host_header)}' is not a name this service answers to: it answers to "
                    "localhost, 127.0.0.1, [::1], the address it is bound to and the names in "
                    'allowed_hosts (README, "Access and limits")',
                )
            own = (scheme, host, ORIGIN_PORTS.get(scheme, 80) if port is None else port)
        if origin is not None:
            if origin.strip().lower() == "null":
                return Refusal(
                    403,
                    "ForbiddenException",
                    "A request from a page that hides its origin (Origin: null: a sandboxed frame, a "
                    "local file, a redirect across sites) is refused",
                )
            try:
                sender: tuple[str, str, int] | None = _origin_of(origin)
            except ValueError:
                sender = None
            if sender is None or (sender != own and sender not in self.origins):
                return Refusal(
                    403,
                    "ForbiddenException",
                    f"A request from a page of origin '{_shown(origin)}' is refused: only the service's "
                    'own pages and the origins in allowed_origins may send requests (README, "Access and limits")',
                )
            return None
        if (
            method not in SAFE_METHODS
            and fetch_site is not None
            and fetch_site.strip().lower() in FOREIGN_SITES
        ):
            return Refusal(
                403,
                "ForbiddenException",
                f"A {method} from a page of another origin (Sec-Fetch-Site: {_shown(fetch_site.strip())}) is refused",
            )
        return None


def page_refusal(policy: PagePolicy, request: web.Request) -> web.Response | None:
    """The answer to a request `policy` refuses, or None when it may go on (the first
    check of service.web.access's middleware)."""
    headers = request.headers
    refused = policy.refusal(
        request.method,
        request.scheme,
        headers.get("Host"),
        headers.get("Origin"),
        headers.get("Sec-Fetch-Site"),
    )
    if refused is None:
        return None
    log.info("%s: refused %s %s: %s", request.remote, request.method, request.path, refused.message)
    response = error_response(refused.status, refused.kind, refused.message)
    if request.body_exists or "Transfer-Encoding" in headers:
        response.force_close()  # the body stays unread: the connection cannot be reused
    return response

"""Authentication and per-graph grants: HTTP Basic users and Bearer tokens (README, "Access
and limits").

Authentication is on when the configuration has users or tokens. Then every request but
`/versions`, `/health`, `/ready`, `/openapi.json` (and `/metrics` with `metrics_public`)
needs credentials; without valid ones it gets a 401 with the JSON error body and a
`WWW-Authenticate` challenge.

Passwords are PBKDF2 hashes with many iterations: a quarter of a second of CPU each. That is
the point against guessing, but a keep-alive client sends its credentials with every request,
so a successful verification is remembered, keyed by an HMAC of the whole Authorization
header under a key made at start (the cache holds no password, and its keys cannot be
computed from outside). A verification runs in a thread, so the event loop serves on; a
failed one is never remembered. An unknown user costs as much as a wrong password, so the
time of a refusal does not tell which names exist.

A user or token listed in `grants` reaches only its graphs. Any other graph answers as a
graph that does not exist (404, not 403): a caller learns nothing about graphs it may not
use. `/events` gives such a caller its graphs' events only; claiming work for an external
worker (which takes tasks of every graph) is a 403 for it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from .. import auth
from ..config import Settings, parse_graph
from ..errors import Forbidden, NotFound
from ..model import GraphRef
from .params import DEFAULT_GRAPHSPACE
from .responses import error_response

#: routes that answer without credentials: clients read /versions before they log in
#: (pyhugegraph does, without credentials), probes read /health and /ready
OPEN_PATHS = frozenset({"/versions", "/health", "/ready", "/openapi.json"})
REALM = "sidetask"
#: successful verifications remembered (each entry: 32 bytes of key and the principal)
CACHE_SIZE = 4096
#: the route that hands out tasks of every graph
CLAIM_ROUTE = "/workers/{worker}/claim"


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


class Authenticator:
    """Checks an Authorization header against the configured users and tokens."""

    def __init__(
        self,
        users: Mapping[str, str],
        tokens: Mapping[str, str],
        grants: Mapping[str, Iterable[str]],
        metrics_public: bool = False,
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
        self._cache: OrderedDict[bytes, Principal] = OrderedDict()
        challenges = []
        if self.users:
            challenges.append(f'Basic realm="{REALM}", charset="UTF-8"')
        if self.tokens:
            challenges.append(f'Bearer realm="{REALM}"')
        self.challenges = tuple(challenges)

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        return cls(settings.users, settings.tokens, settings.grants, settings.metrics_public)

    def principal(self, name: str) -> Principal:
        return Principal(name, self._graphs.get(name))

    async def authenticate(self, header: str | None) -> Principal:
        if header is None or not header.strip():
            raise _Refused("Authentication required: send HTTP Basic credentials or a Bearer token")
        key = hmac.new(self._cache_key, header.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()
        known = self._cache.get(key)
        if known is not None:
            self._cache.move_to_end(key)
            return known
        scheme, _, credentials = header.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "basic" and self.users:
            name = await self._basic(credentials.strip())
        elif scheme == "bearer" and self.tokens:
            name = await self._bearer(credentials.strip())
        else:
            accepted = " or ".join(c.split(" ", 1)[0] for c in self.challenges)
            raise _Refused(f"The Authorization scheme '{scheme}' is not accepted here; use {accepted}")
        principal = self.principal(name)
        self._cache[key] = principal
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return principal

    async def _basic(self, credentials: str) -> str:
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
            raise _Refused("The HTTP Basic credentials have no ':' between the user and the password")
        stored = self.users.get(user)
        # The check runs for an unknown user too, against the decoy: the same time either way.
        matched = await asyncio.to_thread(auth.verify, password, stored or self._decoy)
        if stored is None or not matched:
            raise _Refused("Invalid user name or password")
        return user

    async def _bearer(self, token: str) -> str:
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
            if found is None and await asyncio.to_thread(auth.verify, token, stored):
                found = name
        if found is None:
            raise _Refused("Invalid Bearer token")
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


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    authenticator = request.app[AUTH]
    if not authenticator.enabled or request.path in authenticator.open_paths:
        return await handler(request)
    try:
        principal = await authenticator.authenticate(request.headers.get("Authorization"))
    except _Refused as refused:
        return _unauthorized(authenticator, refused.message)
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
    return await handler(request)

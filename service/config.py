"""Settings: the shipped TOML file, then a user's file, then SIDETASK_* environment variables."""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import logging
import math
import os
import re
import tomllib
import types
import typing
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from . import auth, tracing
from .model import CALLBACK_HOOK, GraphRef, Status
from .schedules import Definition, parse_definition
from .schedules import check_name as check_schedule_name

SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "config" / "sidetask.toml"
ENV_PREFIX = "SIDETASK_"
LOG_FORMATS = ("text", "json")


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the setting and the source."""


#: the types a command's declared parameter may have, as TOML writes them
COMMAND_PARAM_TYPES = ("string", "integer", "number", "boolean")
#: the status names a hook may fire on (every status a task is written in)
STATUS_NAMES = tuple(s.value for s in Status if s is not Status.UNKNOWN)
#: where a job of your own may run: "service" (in the service's process: an async function
#: in its event loop, a plain one in a thread of its own) or "process" (a child process of
#: its own, which a cancel or a timeout stops; README, "Jobs")
JOB_RUN_IN = ("service", "process")


@dataclass(frozen=True)
class JobSpec:
    """A job type of your own declared as a table, `[jobs.NAME]`: where its function runs."""

    #: "module:callable", as in the short form `NAME = "module:callable"`
    call: str
    #: one of JOB_RUN_IN
    run_in: str = "service"


@dataclass(frozen=True)
class CommandSpec:
    """A declared command job: `argv` with `{name}` placeholders filled from the task's input,
    each placeholder declared in `params` with its type. Input never reaches a shell."""

    argv: tuple[str, ...]
    #: placeholder name -> one of COMMAND_PARAM_TYPES; every one is required in the input
    params: Mapping[str, str] = field(default_factory=dict)
    #: added to the service's environment; values may hold placeholders too
    env: Mapping[str, str] = field(default_factory=dict)
    #: working directory (relative to the service's); None: the service's
    cwd: str | None = None
    #: seconds before the command is stopped and the run fails; None: no limit
    timeout: float | None = None
    #: the progress value that means done (task_progress_total): an integer, or "{name}"
    #: of a declared integer parameter; None: the command's `progress: N/M` lines, if any
    total: int | str | None = None


#: the statuses a hook or a task's callback fires on when the configuration does not say
TERMINAL_STATUS_NAMES = ("success", "failed", "cancelled")
#: the schemes a webhook's URL may have
WEBHOOK_SCHEMES = ("http", "https")


@dataclass(frozen=True)
class HookSpec:
    """A webhook declared as `[[hooks]]`: sidetask POSTs a task to `url` on each change to
    one of `statuses` of a task of one of `types` (README, "Webhooks")."""

    #: names the hook in a delivery (GET …/tasks/{id}/deliveries); its secret is found by it
    name: str
    url: str
    #: the HMAC-SHA256 key of the Sidetask-Signature header
    secret: str
    #: status names; default: the completed ones
    statuses: tuple[str, ...] = TERMINAL_STATUS_NAMES
    #: job types; empty: every type
    types: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScheduleSpec:
    """A schedule declared as `[schedules.NAME]` (README, "Schedules"): created at start,
    its definition replaced when it changed, deleted when it is no longer declared."""

    definition: Definition
    #: "graphspace/graph"; empty: the first of `graphs`
    graph: str = ""


@dataclass(frozen=True)
class Settings:
    """Every setting of the service. The README lists them; the names are the TOML keys,
    and `SIDETASK_<NAME>` in upper case overrides each one."""

    #: address and port the HTTP server binds
    host: str = "127.0.0.1"
    port: int = 8080
    #: the SQLite database file (created with its directory when missing), or a
    #: PostgreSQL URL (postgresql://user:password@host:port/database)
    db: str = "var/sidetask.db"
    #: the PostgreSQL schema sidetask's tables live in (created when missing); not used
    #: with SQLite
    db_schema: str = "sidetask"
    #: PostgreSQL: seconds between this process's heartbeats (and sweeps for dead ones)
    heartbeat_interval: float = 5.0
    #: PostgreSQL: seconds without a heartbeat after which a process is declared dead and
    #: the tasks it held are recovered by the others
    replica_timeout: float = 30.0
    #: declared graphs, each "graphspace/graph"
    graphs: tuple[str, ...] = ("DEFAULT/hugegraph",)
    #: how many jobs run at once in this process
    concurrency: int = 16
    #: per job type limits on jobs running at once, e.g. {gremlin = 2}
    type_concurrency: Mapping[str, int] = field(default_factory=dict)
    #: per job type limits on starts, "N/s" or "N/min", e.g. {gremlin = "10/s"}: held
    #: across replicas (README, "Rate limits")
    type_rate_limits: Mapping[str, str] = field(default_factory=dict)
    #: job types of your own: name -> "module:callable", or a table {call, run_in} (JobSpec)
    jobs: Mapping[str, str | JobSpec] = field(default_factory=dict)
    #: directories put at the front of sys.path before the job modules are imported (a
    #: myjobs.py of your project): relative to the configuration file that names them, or
    #: to the working directory when they come from the environment or the command line
    import_paths: tuple[str, ...] = ()
    #: max_retries of a task submitted without one
    default_max_retries: int = 3
    #: first retry waits this many seconds, doubling each retry, with jitter
    retry_backoff: float = 1.0
    #: the longest wait before a retry, in seconds
    retry_backoff_max: float = 300.0
    #: how often coalesced progress is written, in seconds
    progress_interval: float = 0.1
    #: how long running jobs get to finish after SIGTERM, in seconds
    drain_grace: float = 10.0
    #: completed tasks older than this many seconds are purged
    task_retention: float = 7 * 24 * 3600.0
    #: events older than this many seconds are purged
    event_retention: float = 24 * 3600.0
    #: how often the purge runs, in seconds
    purge_interval: float = 60.0
    #: the Gremlin HTTP endpoint the gremlin job posts to (HugeGraph's POST /gremlin); empty: none
    gremlin_url: str = ""
    #: seconds before a gremlin request gives up
    gremlin_timeout: float = 60.0
    #: seconds between keep-alive comments on idle event streams
    sse_keepalive: float = 15.0
    #: the reconnection delay (milliseconds) event streams suggest to clients
    sse_retry_ms: int = 2000
    #: bytes an event stream may have unsent before its subscriber is disconnected
    sse_buffer_bytes: int = 1024 * 1024
    #: seconds after which a live event stream ends cleanly (clients resume with
    #: Last-Event-ID); 0: streams last as long as their clients
    sse_max_seconds: float = 0.0
    #: seconds a replaying event stream waits for its client to take what was sent (its
    #: buffer over sse_buffer_bytes) before it is disconnected
    sse_stall_seconds: float = 10.0
    #: open event streams past which a new one is refused with 503; 0: no limit
    max_streams: int = 10_000
    #: command jobs: name -> {argv, params, env, cwd, timeout, total} (README, "Command jobs")
    commands: Mapping[str, CommandSpec] = field(default_factory=dict)
    #: seconds a stopped command gets between SIGTERM and SIGKILL to its process group
    kill_grace: float = 5.0
    #: job types served by external workers over HTTP (README, "External workers")
    external_types: tuple[str, ...] = ()
    #: seconds a worker's claim lasts without a report; each report extends it
    lease_duration: float = 30.0
    #: the name this process writes into task_server
    server_name: str = "sidetask"
    #: logging level name
    log_level: str = "INFO"
    #: log lines as "text" (for people) or "json" (one object per line, for log collectors)
    log_format: str = "text"
    #: HTTP Basic users: name -> "pbkdf2_sha256$<iterations>$<salt>$<hash>" (sidetask hash-password)
    users: Mapping[str, str] = field(default_factory=dict)
    #: Bearer tokens: name -> "sha256$<hex>" of the token (sidetask new-token)
    tokens: Mapping[str, str] = field(default_factory=dict)
    #: graphs a user or token may reach: name -> ["graphspace/graph", …] or ["*"]; a name
    #: not listed reaches every graph
    grants: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: whether GET /metrics answers without credentials when authentication is on
    metrics_public: bool = False
    #: threads that check passwords (PBKDF2, a quarter of a second of CPU each), never more
    #: at once; 0: half the CPUs, at least one
    auth_threads: int = 0
    #: credential checks that may wait for a thread; past them a check is refused with 503
    auth_queue: int = 8
    #: failed logins from one address within auth_failure_window past which it is refused
    #: with 429 (no check runs) until the window ends; 0: no limit
    auth_max_failures: int = 10
    #: seconds from an address's first failed login over which its failures are counted
    auth_failure_window: float = 60.0
    #: open client connections past which a new one is answered 503 and closed; 0: no limit
    max_connections: int = 4096
    #: seconds a connection has to send a request's line and headers, from its start or
    #: from a request's first byte; then it is closed (408); 0: no limit
    header_timeout: float = 10.0
    #: bytes a request body may have (HugeGraph's 16 MiB task input, plus its JSON framing)
    max_body_bytes: int = 16 * 1024 * 1024 + 64 * 1024
    #: bytes a request line or a header field may have
    max_header_bytes: int = 8190
    #: bytes of a task's input as stored JSON (HugeGraph: 16 MiB)
    max_input_bytes: int = 16 * 1024 * 1024
    #: bytes of a job's result as stored JSON (HugeGraph: 16 MiB); more fails the task
    max_result_bytes: int = 16 * 1024 * 1024
    #: bytes of a job's checkpoint as JSON (ctx.checkpoint): a larger one is refused to the
    #: job with a ValueError
    max_checkpoint_bytes: int = 64 * 1024
    #: lines of a task's log kept (ctx.log, its logging and print, a command's output):
    #: past it the oldest are dropped, and one marker line says how many
    max_log_lines: int = 10_000
    #: characters of one log line kept; a longer one is cut, with a mark
    max_log_line_chars: int = 4096
    #: tasks a bulk action (POST …/tasks/bulk) lists and acts on at a time: each batch's
    #: changes are committed together, so other writes wait at most one batch
    bulk_batch: int = 500
    #: characters of a failed attempt's traceback kept (its last ones: the innermost frames
    #: and the error); 0: no tracebacks are kept
    max_traceback_chars: int = 16 * 1024
    #: OpenTelemetry spans of submissions, queue waits and attempts, under each task's
    #: trace context (needs the `otel` extra; README, "Traces"); false: nothing of
    #: OpenTelemetry is imported (a submitted traceparent is kept and passed on all the same)
    tracing: bool = False
    #: tasks waiting to run (new, scheduling, scheduled, queued, restoring) past which a
    #: submission is refused with 429; 0: no limit
    max_waiting: int = 100_000
    #: names and addresses a request's Host may carry besides the loopback ones (localhost,
    #: *.localhost, 127.0.0.0/8, ::1) and the bound address: e.g. the pod's or the Service's
    #: name; "*.example.org" any name under it; "*" any Host (README, "Access and limits")
    allowed_hosts: tuple[str, ...] = ()
    #: origins ("scheme://host[:port]") besides the service's own whose pages may send it
    #: requests, e.g. that of a proxy serving the dashboard under another name
    allowed_origins: tuple[str, ...] = ()
    #: webhooks: a list of tables {name, url, secret, statuses, types} (HookSpec; README,
    #: "Webhooks")
    hooks: tuple[HookSpec, ...] = ()
    #: the secret that signs the calls to a task's own `callback` URL; empty: the option
    #: `callback` is refused (400)
    callback_secret: str = ""
    #: the statuses a task's callback fires on
    callback_statuses: tuple[str, ...] = TERMINAL_STATUS_NAMES
    #: webhook targets allowed besides public addresses: host names ("hooks.internal",
    #: "*.internal": any name under it) and networks ("10.1.0.0/16", "127.0.0.1/32"); a
    #: target resolving to a loopback, private, link-local (cloud metadata) or other
    #: non-public address is refused unless an entry allows it
    webhook_allow: tuple[str, ...] = ()
    #: the URL schemes a webhook target may have (of http, https)
    webhook_schemes: tuple[str, ...] = WEBHOOK_SCHEMES
    #: seconds one delivery attempt may take (connect, send, the answer's status), then it
    #: is retried
    webhook_timeout: float = 10.0
    #: delivery attempts in flight at once in this process
    webhook_concurrency: int = 16
    #: seconds after the change during which a delivery is retried; then it is failed
    webhook_retry_for: float = 24 * 3600.0
    #: seconds before a delivery's first retry, doubling each retry, with jitter
    webhook_backoff: float = 1.0
    #: the longest wait between two attempts of a delivery, in seconds
    webhook_backoff_max: float = 600.0

    #: schedules: name -> {type, cron + timezone or every, input, name, priority,
    #: max_retries, timeout, missed, graph} (ScheduleSpec; README, "Schedules")
    schedules: Mapping[str, ScheduleSpec] = field(default_factory=dict)
    #: seconds a schedule's fire time may be late and still get its task; an older one was
    #: missed (the service was down), and the schedule's `missed` policy says what it gets
    schedule_grace: float = 60.0
    #: seconds a process holds the due schedules it claimed to fire, before another may take
    #: them (PostgreSQL: when the first died while firing)
    schedule_lease: float = 30.0

    def schedules_declared(self) -> dict[tuple[GraphRef, str], Definition]:
        """The declared schedules by (graph, name)."""
        first = self.graph_refs()[0]
        return {
            (parse_graph(spec.graph) if spec.graph else first, name): spec.definition
            for name, spec in self.schedules.items()
        }

    @property
    def type_rates(self) -> dict[str, tuple[int, int]]:
        """type_rate_limits as (starts, window in ms) per type."""
        return _rates(tuple(sorted(self.type_rate_limits.items())))

    @property
    def auth_enabled(self) -> bool:
        """Authentication is on as soon as a user or a token is configured."""
        return bool(self.users or self.tokens)

    def graph_refs(self) -> tuple[GraphRef, ...]:
        return _graph_refs(self.graphs)


#: the windows a rate limit counts its starts in, by the unit it is written with
RATE_WINDOWS_MS = {"s": 1000, "sec": 1000, "second": 1000, "min": 60_000, "minute": 60_000}
_RATE = re.compile(r"\s*(\d+)\s*/\s*([a-z]+)\s*")


def parse_rate(text: str) -> tuple[int, int]:
    """A rate limit "N/s" or "N/min" as (N, the window in ms); ValueError saying what is
    wrong."""
    match = _RATE.fullmatch(text.lower()) if isinstance(text, str) else None
    if match is None or match.group(2) not in RATE_WINDOWS_MS:
        raise ValueError(f"expected 'N/s' or 'N/min' (starts per second or minute), got {text!r}")
    count = int(match.group(1))
    if not 1 <= count <= 1_000_000:
        raise ValueError(f"the number of starts must be 1 to 1000000, got {text!r}")
    return count, RATE_WINDOWS_MS[match.group(2)]


@functools.lru_cache(maxsize=64)
def _rates(items: tuple[tuple[str, str], ...]) -> dict[str, tuple[int, int]]:
    return {name: parse_rate(text) for name, text in items}


@functools.lru_cache(maxsize=64)
def _graph_refs(graphs: tuple[str, ...]) -> tuple[GraphRef, ...]:
    # every request checks its graph against these: parsed once per list, not per request
    return tuple(parse_graph(text) for text in graphs)


def parse_graph(text: str) -> GraphRef:
    space, sep, graph = text.partition("/")
    if not sep or not space or not graph or "/" in graph:
        raise ConfigError(f"graphs: {text!r} is not of the form 'graphspace/graph'")
    return GraphRef(space, graph)


#: a label of a host name: letters, digits, '-' (not at either end) and '_' (which
#: Docker and Compose names may have)
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
#: the schemes an origin may have, and the port each implies when none is written
ORIGIN_PORTS = {"http": 80, "https": 443}


def normal_host(text: str) -> str:
    """A host name or an IP address in the form Host headers and origins are compared in:
    a name in lower case without a final dot, an address compressed and without brackets.
    ValueError when `text` is neither (a port included)."""
    host = text.strip().lower()
    if host.startswith("[") and host.endswith("]"):  # brackets hold an IPv6 address
        try:
            return str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise ValueError(f"{text!r} is not an IPv6 address") from None
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        hint = " (without a port: ports are not checked)" if ":" in host else ""
        raise ValueError(f"{text!r} is not a host name or an IP address{hint}")
    return name


def parse_allowed_host(text: str) -> str:
    """An entry of allowed_hosts in its compared form: "*", "*.<name>" (any name under
    <name>, not <name> itself), a host name or an IP address."""
    entry = text.strip()
    if entry == "*":
        return entry
    if entry.startswith("*."):
        suffix = normal_host(entry[2:])
        try:
            ipaddress.ip_address(suffix)
        except ValueError:
            return "*." + suffix
        raise ValueError(f"{text!r}: '*.' goes before a name, not an address")
    return normal_host(entry)


def parse_webhook_allow(text: str) -> str | ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An entry of webhook_allow: a network ("10.0.0.0/8", an address alone is its /32 or
    /128), or a host name as allowed_hosts writes one ("hooks.internal", "*.internal")."""
    entry = text.strip()
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        pass
    if entry == "*":
        raise ValueError(f"{text!r}: '*' would allow every target; name hosts or networks")
    return parse_allowed_host(entry)


def parse_origin(text: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an origin written "scheme://host[:port]", the port filled
    in from the scheme when it is not written; ValueError when `text` is not one."""
    shape = f"{text!r} is not an origin of the form http://host[:port] or https://host[:port]"
    try:
        parts = urllib.parse.urlsplit(text.strip())
        port = parts.port
    except ValueError:
        raise ValueError(shape) from None
    scheme = parts.scheme.lower()
    if (
        scheme not in ORIGIN_PORTS
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
    ):
        raise ValueError(shape)
    try:
        host = normal_host(parts.hostname)
    except ValueError as exc:
        raise ValueError(f"{shape}: {exc}") from None
    return scheme, host, ORIGIN_PORTS[scheme] if port is None else port


def load(
    file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """The shipped configuration, then `file`, then the environment, then `overrides`
    (command-line options); later sources win. A value that cannot be used is a
    ConfigError naming the setting and where the value came from."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    def take(found: Mapping[str, Any], source: str, base: Path | None = None) -> None:
        if (
            "import_paths" in found
        ):  # made absolute here, where it is known what they are relative to
            found = {**found, "import_paths": _absolute_paths(found["import_paths"], base)}
        values.update(found)
        sources.update(dict.fromkeys(found, source))

    if SHIPPED_CONFIG.exists():
        take(
            _read_toml(SHIPPED_CONFIG),
            f"configuration file {SHIPPED_CONFIG}",
            SHIPPED_CONFIG.parent,
        )
    if file is not None:
        take(_read_toml(Path(file)), f"configuration file {file}", Path(file).resolve().parent)
    for name, value in _from_env(os.environ if env is None else env).items():
        take({name: value}, ENV_PREFIX + name.upper())
    take({k: v for k, v in overrides.items() if v is not None}, "the command line")
    return _build(values, sources)


def _absolute_paths(value: Any, base: Path | None) -> Any:
    """import_paths made absolute against `base` (None: the working directory); a value
    that is not a list of strings is left for _coerce to refuse."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list | tuple) or not all(isinstance(t, str) for t in texts):
        return value
    return tuple(str(((base or Path.cwd()) / Path(t).expanduser()).resolve()) for t in texts)


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
_HINTS = typing.get_type_hints(Settings)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {path}: {exc}") from None
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"configuration file {path}: unknown setting(s) {', '.join(unknown)}")
    return data


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in _FIELDS:
        key = ENV_PREFIX + name.upper()
        if key in env:
            values[name] = _parse_env(name, key, _HINTS[name], env[key])
    return values


def _parse_env(name: str, key: str, hint: Any, text: str) -> Any:
    """Environment values are text: lists are comma-separated, mappings are JSON objects."""
    origin = typing.get_origin(hint)
    if hint == tuple[HookSpec, ...]:
        try:
            value = orjson.loads(text) if text.strip() else []
        except orjson.JSONDecodeError:
            value = None
        if not isinstance(value, list):
            raise ConfigError(
                f"{name}: expected a JSON array of objects, got {text!r} (from {key})"
            )
        return value
    if origin is tuple:
        return tuple(part.strip() for part in text.split(",") if part.strip())
    if origin is Mapping:
        try:
            value = orjson.loads(text) if text.strip() else {}
        except orjson.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a JSON object, got {text!r} (from {key})")
        return value
    return text


def _build(values: dict[str, Any], sources: Mapping[str, str]) -> Settings:
    typed: dict[str, Any] = {}
    for name, value in values.items():
        try:
            typed[name] = _coerce(name, _HINTS[name], value)
            _check(name, typed[name])
        except ConfigError as exc:
            raise ConfigError(f"{exc} (from {sources.get(name, 'the defaults')})") from None
    settings = Settings(**typed)
    _check_grants(settings, sources.get("grants", "the defaults"))
    served = set(settings.graph_refs())
    for name, spec in settings.schedules.items():
        if spec.graph and parse_graph(spec.graph) not in served:
            raise ConfigError(
                f"schedules.{name}.graph: {spec.graph!r} is not one of graphs "
                f"(from {sources.get('schedules', 'the defaults')})"
            )
    if settings.replica_timeout <= settings.heartbeat_interval:
        raise ConfigError(
            f"replica_timeout ({settings.replica_timeout:g} s) must be longer than "
            f"heartbeat_interval ({settings.heartbeat_interval:g} s), or a live process is "
            "declared dead between two of its heartbeats (from "
            f"{sources.get('replica_timeout', sources.get('heartbeat_interval', 'the defaults'))})"
        )
    return settings


def _check_grants(settings: Settings, source: str) -> None:
    """Grants name known users or tokens and declared graphs: a typo must not pass silently
    (a grant to a graph that is not served would leave its user with less than intended)."""
    names = set(settings.users) | set(settings.tokens)
    served = {str(g) for g in settings.graph_refs()}
    for who, graphs in settings.grants.items():
        if who not in names:
            raise ConfigError(
                f"grants.{who}: no user or token of that name is configured (from {source})"
            )
        for text in graphs:
            if text != "*" and str(parse_graph(text)) not in served:
                raise ConfigError(
                    f"grants.{who}: graph {text!r} is not one of graphs (from {source})"
                )


#: the lower bound of each numeric setting, and whether the bound itself is allowed
_MINIMUM: dict[str, tuple[float, bool]] = {
    "schedule_grace": (0, True),
    "schedule_lease": (0, False),
    "port": (0, True),
    "concurrency": (1, True),
    "default_max_retries": (0, True),
    "retry_backoff": (0, True),
    "retry_backoff_max": (0, True),
    "progress_interval": (0, False),
    "drain_grace": (0, True),
    "task_retention": (0, True),
    "event_retention": (0, True),
    "purge_interval": (0, False),
    "gremlin_timeout": (0, False),
    "sse_keepalive": (0, False),
    "sse_retry_ms": (0, True),
    "sse_buffer_bytes": (1, True),
    "sse_max_seconds": (0, True),
    "sse_stall_seconds": (0, False),
    "max_streams": (0, True),
    "kill_grace": (0, True),
    "lease_duration": (0, False),
    "auth_threads": (0, True),
    "auth_queue": (0, True),
    "auth_max_failures": (0, True),
    "auth_failure_window": (0, False),
    "max_connections": (0, True),
    "header_timeout": (0, True),
    "max_body_bytes": (1024, True),
    "max_header_bytes": (1024, True),
    "max_input_bytes": (1, True),
    "max_result_bytes": (1, True),
    "max_checkpoint_bytes": (1, True),
    "max_log_lines": (1, True),
    "max_log_line_chars": (16, True),
    "bulk_batch": (1, True),
    "max_traceback_chars": (0, True),
    "max_waiting": (0, True),
    "heartbeat_interval": (0, False),
    "replica_timeout": (0, False),
    "webhook_timeout": (0, False),
    "webhook_concurrency": (1, True),
    "webhook_retry_for": (0, True),
    "webhook_backoff": (0, False),
    "webhook_backoff_max": (0, False),
}
_MAXIMUM: dict[str, float] = {
    "port": 65535,
    # a day and a year: a schedule's catch-up after a stop is bounded by them
    "schedule_lease": 24 * 3600,
    "schedule_grace": 365 * 24 * 3600,
    # a checkpoint is read back at each attempt's start, a traceback with every attempt list
    "max_checkpoint_bytes": 16 * 1024 * 1024,
    # every task's log is bounded by it: the disk it may take is tasks * lines * chars
    "max_log_lines": 10_000_000,
    "max_log_line_chars": 1024 * 1024,
    # one batch is one transaction of the writer's (writer.MAX_BATCH)
    "bulk_batch": 4096,
    "max_traceback_chars": 1024 * 1024,
    "webhook_timeout": 3600,
    "webhook_concurrency": 10_000,
}


def _check(name: str, value: Any) -> None:
    """What a value of the right type must also be, for the setting to be usable."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name}: expected a finite number, got {value!r}")
    if name in _MINIMUM:
        bound, inclusive = _MINIMUM[name]
        if value < bound or (value == bound and not inclusive):
            relation = "at least" if inclusive else "more than"
            raise ConfigError(f"{name}: must be {relation} {bound:g}, got {value!r}")
    if name in _MAXIMUM and value > _MAXIMUM[name]:
        raise ConfigError(f"{name}: must be at most {_MAXIMUM[name]:g}, got {value!r}")
    if name == "type_concurrency":
        for type_name, limit in value.items():
            if limit < 1:
                raise ConfigError(f"{name}.{type_name}: must be at least 1, got {limit!r}")
    elif name == "type_rate_limits":
        for type_name, text in value.items():
            try:
                parse_rate(text)
            except ValueError as exc:
                raise ConfigError(f"{name}.{type_name}: {exc}") from None
    elif name == "jobs":
        for type_name, spec in value.items():
            where = f"{name}.{type_name}" if isinstance(spec, str) else f"{name}.{type_name}.call"
            call = spec if isinstance(spec, str) else spec.call
            module, sep, attribute = call.partition(":")
            if not sep or not module.strip() or not attribute.strip():
                raise ConfigError(f"{where}: {call!r} is not of the form 'module:callable'")
    elif name == "tracing":
        if value and not tracing.available():
            raise ConfigError(
                f"{name}: needs OpenTelemetry's API and SDK, which are not installed "
                "(pip install 'sidetask[otel]')"
            )
    elif name == "import_paths":
        for directory in value:
            if not Path(directory).is_dir():
                raise ConfigError(f"{name}: {directory!r} is not a directory")
    elif name == "graphs":
        if not value:
            raise ConfigError(f"{name}: at least one graph must be served")
        for text in value:
            parse_graph(text)
    elif name == "log_level":
        if value.upper() not in logging.getLevelNamesMapping():
            raise ConfigError(
                f"{name}: expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got {value!r}"
            )
    elif name == "log_format":
        if value not in LOG_FORMATS:
            raise ConfigError(f"{name}: expected one of {', '.join(LOG_FORMATS)}, got {value!r}")
    elif name == "gremlin_url":
        parts = urllib.parse.urlsplit(value)
        if value and (parts.scheme not in ("http", "https") or not parts.netloc):
            raise ConfigError(
                f"{name}: expected an http:// or https:// URL (or empty), got {value!r}"
            )
    elif name == "db_schema":
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value):
            raise ConfigError(
                f"{name}: a PostgreSQL schema name of lower-case letters, digits and _, not "
                f"starting with a digit, at most 63 characters; got {value!r}"
            )
    elif name in ("host", "db", "server_name") and not value.strip():
        raise ConfigError(f"{name}: must not be empty")
    elif name in ("users", "tokens"):
        for who, encoded in value.items():
            try:
                parsed = auth.parse_hash(encoded)
            except ValueError as exc:
                hint = "sidetask hash-password" if name == "users" else "sidetask new-token"
                raise ConfigError(f"{name}.{who}: {exc} (make one with `{hint}`)") from None
            if name == "users" and parsed.algorithm != auth.PBKDF2:
                raise ConfigError(
                    f"{name}.{who}: a password must be stored as {auth.PBKDF2} "
                    "(make one with `sidetask hash-password`)"
                )
            if not who or ":" in who:
                raise ConfigError(f"{name}: {who!r} is not a usable name (empty, or with ':')")
    elif name in ("allowed_hosts", "allowed_origins"):
        parse = parse_allowed_host if name == "allowed_hosts" else parse_origin
        for text in value:
            try:
                parse(text)
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from None
    elif name == "hooks":
        names = [hook.name for hook in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"{name}: two hooks named {twice[0]!r}: each needs a name of its own")
    elif name in ("callback_statuses", "webhook_schemes"):
        valid = STATUS_NAMES if name == "callback_statuses" else WEBHOOK_SCHEMES
        for text in value:
            if text not in valid:
                raise ConfigError(f"{name}: {text!r} is not one of {', '.join(valid)}")
    elif name == "webhook_allow":
        for text in value:
            try:
                parse_webhook_allow(text)
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from None
    elif name == "grants":
        for graphs in value.values():
            for text in graphs:
                if text != "*":
                    parse_graph(text)


def _coerce(name: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if hint == tuple[HookSpec, ...]:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name}: expected a list of tables ([[hooks]]), got {value!r}")
        return tuple(_hook(f"{name}[{i}]", item) for i, item in enumerate(value))
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name}: expected a list of strings, got {value!r}")
        return tuple(value)
    if origin is Mapping:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a table, got {value!r}")
        item_type = typing.get_args(hint)[1]
        if typing.get_origin(item_type) is tuple:  # a table of lists, e.g. grants
            return types.MappingProxyType(
                {str(k): _coerce(f"{name}.{k}", item_type, v) for k, v in value.items()}
            )
        return types.MappingProxyType(
            {str(k): _scalar(f"{name}.{k}", item_type, v) for k, v in value.items()}
        )
    return _scalar(name, hint, value)


def _schedule(name: str, value: Any) -> ScheduleSpec:
    """One declared schedule, checked as the API checks one (service.schedules)."""
    if isinstance(value, ScheduleSpec):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: expected a table with type and cron or every")
    try:
        check_schedule_name(name.partition(".")[2])
        if "paused" in value:
            raise ValueError("'paused' is not declared: pause and resume it over the API")
        graph = value.get("graph", "")
        if not isinstance(graph, str):
            raise ValueError(f"'graph' must be 'graphspace/graph', got {graph!r}")
        if graph:
            parse_graph(graph)
        definition = parse_definition({k: v for k, v in value.items() if k != "graph"})
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    return ScheduleSpec(definition=definition, graph=graph)


def _scalar(name: str, hint: Any, value: Any) -> Any:
    if hint is ScheduleSpec:
        return _schedule(name, value)
    if hint is CommandSpec:
        return _command(name, value)
    if hint == str | JobSpec:
        return _job(name, value)
    try:
        if hint is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in {"true", "false", "1", "0", "yes", "no"}:
                    raise ValueError
                return lowered in {"true", "1", "yes"}
            return bool(value)
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError):
        pass
    else:
        raise ConfigError(f"{name}: unsupported setting type {hint!r}")
    raise ConfigError(f"{name}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


_HOOK_KEYS = ("name", "url", "secret", "statuses", "types")


def _hook(name: str, value: Any) -> HookSpec:
    """One declared webhook, checked for shape: a URL of http(s), a secret, known statuses."""
    if isinstance(value, HookSpec):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: expected a table with {', '.join(_HOOK_KEYS)}, got {value!r}")
    unknown = sorted(set(value) - set(_HOOK_KEYS))
    if unknown:
        raise ConfigError(
            f"{name}: unknown key(s) {', '.join(unknown)}; expected {', '.join(_HOOK_KEYS)}"
        )
    url = value.get("url")
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if (
        not isinstance(url, str)
        or parts is None
        or parts.scheme not in WEBHOOK_SCHEMES
        or not parts.hostname
    ):
        raise ConfigError(f"{name}.url: expected an http:// or https:// URL, got {url!r}")
    secret = value.get("secret")
    if not isinstance(secret, str) or not secret:
        raise ConfigError(f"{name}.secret: expected a non-empty string (the signing key)")
    hook_name = value.get("name", url)
    if not isinstance(hook_name, str) or not hook_name.strip() or hook_name == CALLBACK_HOOK:
        raise ConfigError(
            f"{name}.name: expected a non-empty string other than {CALLBACK_HOOK!r}, got {hook_name!r}"
        )
    lists: dict[str, tuple[str, ...]] = {}
    for key, default in (("statuses", TERMINAL_STATUS_NAMES), ("types", ())):
        items = value.get(key, list(default))
        if isinstance(items, str):
            items = [items]
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"{name}.{key}: expected a list of strings, got {items!r}")
        lists[key] = tuple(items)
    for status in lists["statuses"]:
        if status not in STATUS_NAMES:
            raise ConfigError(
                f"{name}.statuses: {status!r} is not one of {', '.join(STATUS_NAMES)}"
            )
    if not lists["statuses"]:
        raise ConfigError(f"{name}.statuses: at least one status")
    return HookSpec(hook_name, url, secret, lists["statuses"], lists["types"])


def _job(name: str, value: Any) -> str | JobSpec:
    """A job type of your own: "module:callable", or a table with `call` and `run_in`."""
    if isinstance(value, str | JobSpec):
        return value
    if not isinstance(value, dict):
        raise ConfigError(
            f"{name}: expected 'module:callable' or a table with call and run_in, got {value!r}"
        )
    unknown = sorted(set(value) - {"call", "run_in"})
    if unknown:
        raise ConfigError(f"{name}: unknown key(s) {', '.join(unknown)}; expected call, run_in")
    call = value.get("call")
    if not isinstance(call, str):
        raise ConfigError(f"{name}.call: expected 'module:callable', got {call!r}")
    run_in = value.get("run_in", "service")
    if run_in not in JOB_RUN_IN:
        raise ConfigError(f"{name}.run_in: expected one of {', '.join(JOB_RUN_IN)}, got {run_in!r}")
    return JobSpec(call=call, run_in=run_in)


def _command(name: str, value: Any) -> CommandSpec:
    """One declared command, checked for shape and types; its placeholders are checked
    against `params` when the job types are built (service.jobs.command)."""
    if isinstance(value, CommandSpec):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: expected a table with argv, params, env, cwd, timeout, total")
    unknown = sorted(set(value) - {"argv", "params", "env", "cwd", "timeout", "total"})
    if unknown:
        raise ConfigError(f"{name}: unknown key(s) {', '.join(unknown)}")
    argv = value.get("argv")
    if not isinstance(argv, list | tuple) or not argv or not all(isinstance(a, str) for a in argv):
        raise ConfigError(f"{name}.argv: expected a non-empty list of strings, got {argv!r}")
    params = value.get("params", {})
    if not isinstance(params, dict) or not all(
        isinstance(t, str) and t in COMMAND_PARAM_TYPES for t in params.values()
    ):
        raise ConfigError(
            f"{name}.params: expected a table of name = type, the types being "
            f"{', '.join(COMMAND_PARAM_TYPES)}; got {params!r}"
        )
    env = value.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise ConfigError(f"{name}.env: expected a table of strings, got {env!r}")
    cwd = value.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise ConfigError(f"{name}.cwd: expected a string, got {cwd!r}")
    timeout = value.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise ConfigError(f"{name}.timeout: expected a positive number of seconds, got {timeout!r}")
    total = value.get("total")
    if total is not None and not (
        (isinstance(total, int) and not isinstance(total, bool) and 1 <= total < 2**63)
        or isinstance(total, str)
    ):
        raise ConfigError(
            f'{name}.total: expected an integer of at least 1, or "{{name}}" of an integer '
            f"parameter, got {total!r}"
        )
    return CommandSpec(
        argv=tuple(argv),
        params=types.MappingProxyType({str(k): v for k, v in params.items()}),
        env=types.MappingProxyType({str(k): v for k, v in env.items()}),
        cwd=cwd,
        timeout=None if timeout is None else float(timeout),
        total=total,
    )

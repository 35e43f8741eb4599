"""W3C trace context: a submission's `traceparent` and `tracestate` checked and kept, and
the spans of a task (service.otel) made only when `tracing` is on. Nothing here imports
OpenTelemetry: without the `otel` extra, or with tracing off, nothing of it is loaded."""

from __future__ import annotations

import importlib.util
import re
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .model import Task

#: version-trace_id-parent_id-flags, lower-case hex (W3C Trace Context, section 3.2); a
#: version above 00 may carry more fields after a '-'
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
#: a tracestate member: key=value (section 3.3.1), the key with an optional tenant@system
_MEMBER = re.compile(
    r"(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)
#: the most of a tracestate kept (the specification asks vendors to pass on at least 512
#: characters) and its most members
MAX_TRACESTATE_CHARS = 512
MAX_TRACESTATE_MEMBERS = 32
_ZERO_TRACE = "0" * 32
_ZERO_PARENT = "0" * 16


def parse_traceparent(value: str | None) -> str | None:
    """A `traceparent` header as version 00 (`00-<trace id>-<parent id>-<flags>`), or None
    when it is missing or malformed: as the specification says, a receiver that cannot
    parse it goes on as if there were none (the submission is not refused)."""
    if value is None:
        return None
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_PARENT:
        return None
    return f"00-{trace_id}-{parent_id}-{flags}"


def parse_tracestate(values: list[str]) -> str | None:
    """The `tracestate` header(s) joined, or None when absent, empty or malformed (a
    malformed one is dropped, the traceparent kept), or longer than MAX_TRACESTATE_CHARS."""
    members = [m.strip() for value in values for m in value.split(",") if m.strip()]
    if not members or len(members) > MAX_TRACESTATE_MEMBERS:
        return None
    if not all(_MEMBER.fullmatch(member) for member in members):
        return None
    text = ",".join(members)
    return text if len(text) <= MAX_TRACESTATE_CHARS else None


def available() -> bool:
    """Whether the `otel` extra is installed (looked up, not imported)."""
    try:
        return (
            importlib.util.find_spec("opentelemetry") is not None
            and importlib.util.find_spec("opentelemetry.sdk") is not None
        )
    except (ImportError, ValueError):
        return False


class AttemptSpan(Protocol):
    """One attempt's span, open while its job runs."""

    #: the span's own trace context, which the job sees as ctx.traceparent / ctx.tracestate
    traceparent: str | None
    tracestate: str | None

    def enter(self) -> None:
        """Makes the span the current one in the calling task's context (the job's own code
        runs under it, and a thread it runs in copies that context)."""

    def end(self, outcome: str, error: str | None = None) -> None: ...


class SubmitSpan(Protocol):
    """A submission's span, open while it is stored."""

    #: the span's trace context when the submission came without one: the task is kept
    #: under it, so its queue waits and attempts join the submission's trace
    traceparent: str | None
    tracestate: str | None

    def end(self, task: Task | None, created: bool, error: str | None = None) -> None: ...


class Tracer(Protocol):
    """The spans of tasks (service.otel.OtelTracer)."""

    def submit(
        self, traceparent: str | None, tracestate: str | None, type_name: str
    ) -> SubmitSpan: ...
    def queued(self, task: Task, attempt: int, start_ms: int, end_ms: int) -> None: ...
    def attempt(self, task: Task, attempt: int, start_ms: int) -> AttemptSpan: ...


def tracer(enabled: bool, provider: Any = None) -> Tracer | None:
    """The tracer of `tracing = true` (None when off: then OpenTelemetry is never imported)."""
    if not enabled:
        return None
    from . import otel  # only here: the optional extra

    return otel.OtelTracer(provider)

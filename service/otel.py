"""OpenTelemetry spans of tasks (the `otel` extra), imported only when `tracing` is on:
a submission's span, each queue wait's and each attempt's, under the task's trace context."""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from . import __version__
from .model import Task

log = logging.getLogger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()
#: the attempt outcomes that are a failure of the run (its span's status is ERROR)
_FAILED = frozenset({"failed", "timed_out", "lost"})


def _parent(traceparent: str | None, tracestate: str | None) -> otel_context.Context:
    carrier = {} if traceparent is None else {"traceparent": traceparent}
    if traceparent is not None and tracestate is not None:
        carrier["tracestate"] = tracestate
    return _PROPAGATOR.extract(carrier)


def _headers(span: trace.Span) -> tuple[str | None, str | None]:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent"), carrier.get("tracestate")


def _attributes(task: Task) -> dict[str, Any]:
    return {
        "sidetask.task.id": task.id,
        "sidetask.task.type": task.type,
        "sidetask.task.name": task.name,
        "sidetask.graph": str(task.graph),
    }


class _SubmitSpan:
    def __init__(self, span: trace.Span, given: bool) -> None:
        self._span = span
        #: no context came with the submission: the task is kept under this span's
        given_traceparent, given_tracestate = _headers(span)
        self.traceparent = None if given else given_traceparent
        self.tracestate = None if given else given_tracestate

    def end(self, task: Task | None, created: bool, error: str | None = None) -> None:
        span = self._span
        if task is not None:
            span.set_attributes(_attributes(task))
            span.set_attribute("sidetask.created", created)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()


class _AttemptSpan:
    def __init__(self, span: trace.Span, parent: otel_context.Context) -> None:
        self._span = span
        self._parent = parent
        self._token: object | None = None
        self.traceparent, self.tracestate = _headers(span)

    def enter(self) -> None:
        self._token = otel_context.attach(trace.set_span_in_context(self._span, self._parent))

    def end(self, outcome: str, error: str | None = None) -> None:
        span = self._span
        span.set_attribute("sidetask.outcome", outcome)
        if outcome in _FAILED:
            span.set_status(Status(StatusCode.ERROR, error or outcome))
        span.end()
        if self._token is not None:
            try:
                otel_context.detach(self._token)  # type: ignore[arg-type]
            except ValueError:  # entered in another context: it ends with that task
                pass
            self._token = None


#: OTEL_TRACES_EXPORTER's values this setup knows (OpenTelemetry's own variable)
EXPORTERS = ("otlp", "console", "none")


def install_provider(service_name: str = "sidetask") -> Any:
    """For `sidetask serve` with tracing on: when nothing has set up a tracer provider (no
    `opentelemetry-instrument`, no application code), the SDK's, with its resource from
    OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES (service.name `service_name` otherwise)
    and the exporter OTEL_TRACES_EXPORTER names: `otlp` (the default: OTLP over HTTP, to
    OTEL_EXPORTER_OTLP_ENDPOINT, with the package opentelemetry-exporter-otlp-proto-http),
    `console` (standard output) or `none`. Returns the provider it set up (shut down at
    the end, which sends what is left), or None when one was there."""
    import os

    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        log.info("tracing: spans go to the tracer provider already set up")
        return None
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    choice = (os.environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(",")[0].strip().lower()
    if choice == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif choice == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning(
                "tracing: spans are made but not exported: install "
                "opentelemetry-exporter-otlp-proto-http for OTLP, or set "
                "OTEL_TRACES_EXPORTER=console"
            )
        else:
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    elif choice != "none":
        log.warning(
            "tracing: OTEL_TRACES_EXPORTER=%s is not one of %s; spans are not exported",
            choice,
            ", ".join(EXPORTERS),
        )
    trace.set_tracer_provider(provider)
    log.info("tracing: spans of %s exported by %s", service_name, choice)
    return provider


class OtelTracer:
    """Spans through `provider` (None: the global tracer provider, as the application or
    `opentelemetry-instrument` set it up)."""

    def __init__(self, provider: Any = None) -> None:
        source = trace.get_tracer_provider() if provider is None else provider
        self._tracer = source.get_tracer("sidetask", __version__)

    def submit(
        self, traceparent: str | None, tracestate: str | None, type_name: str
    ) -> _SubmitSpan:
        span = self._tracer.start_span(
            "sidetask.submit",
            context=_parent(traceparent, tracestate),
            kind=SpanKind.PRODUCER,
            attributes={"sidetask.task.type": type_name},
        )
        return _SubmitSpan(span, traceparent is not None)

    def queued(self, task: Task, attempt: int, start_ms: int, end_ms: int) -> None:
        span = self._tracer.start_span(
            "sidetask.queue",
            context=_parent(task.traceparent, task.tracestate),
            kind=SpanKind.INTERNAL,
            attributes={**_attributes(task), "sidetask.attempt": attempt},
            start_time=start_ms * 1_000_000,
        )
        span.end(end_time=max(end_ms, start_ms) * 1_000_000)

    def attempt(self, task: Task, attempt: int, start_ms: int) -> _AttemptSpan:
        parent = _parent(task.traceparent, task.tracestate)
        span = self._tracer.start_span(
            "sidetask.attempt",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                **_attributes(task),
                "sidetask.attempt": attempt,
                "sidetask.task.retries": task.retries,
            },
            start_time=start_ms * 1_000_000,
        )
        return _AttemptSpan(span, parent)

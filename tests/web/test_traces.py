"""Traces: a submission's W3C `traceparent` and `tracestate` are checked, kept with the task
(both stores) and shown in its JSON; with `tracing` on, the spans of the submission, the
queue wait and each attempt (OpenTelemetry's in-memory exporter) continue the submitted
trace, and a job's own code (async, in a thread, in a child process, a command) runs
under its attempt's span. With tracing off, nothing of OpenTelemetry is imported."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service import config, tracing
from service.config import ConfigError
from service.jobs import JobContext
from service.web import create_app
from tests.conftest import get_task, make_settings, wait_for, wait_status

BASE = "/graphs/hugegraph"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
ROOT = Path(__file__).resolve().parent.parent.parent


def _current_span_id() -> str:
    return format(trace.get_current_span().get_span_context().span_id, "016x")


async def traced_async(ctx: JobContext) -> dict[str, Any]:
    with trace.get_tracer("tests").start_as_current_span("job.async"):
        await asyncio.sleep(0)
    return {"traceparent": ctx.traceparent, "tracestate": ctx.tracestate}


def traced_thread(ctx: JobContext) -> dict[str, Any]:
    with trace.get_tracer("tests").start_as_current_span("job.thread"):
        pass
    return {"traceparent": ctx.traceparent}


def traced_child(ctx: JobContext) -> dict[str, Any]:
    """In a child process: the span current there is the attempt's (a remote parent)."""
    return {"traceparent": ctx.traceparent, "current": _current_span_id()}


async def fails_once(ctx: JobContext) -> str:
    if ctx.retries == 0:
        raise OSError("out of disk")
    return "done"


JOBS: dict[str, Any] = {
    "traced_async": f"{__name__}:traced_async",
    "traced_thread": f"{__name__}:traced_thread",
    "traced_child": {"call": f"{__name__}:traced_child", "run_in": "process"},
    "fails_once": f"{__name__}:fails_once",
}
COMMANDS = {
    "env": {"argv": [sys.executable, "-c", "import os; print(os.environ.get('TRACEPARENT'))"]}
}

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The SDK's in-memory exporter behind the global tracer provider (set once a process;
    the exporter is emptied for each test)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    if not getattr(provider, "_sidetask_test_exporter", False):
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        provider._sidetask_test_exporter = True  # type: ignore[attr-defined]
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


@pytest.fixture
async def traced(
    aiohttp_client: Any, tmp_path: Path, any_db: Path | str, spans: InMemorySpanExporter
) -> TestClient:
    settings = make_settings(tmp_path, any_db, jobs=JOBS, commands=COMMANDS, tracing=True)
    return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]


@pytest.fixture
async def plain(aiohttp_client: Any, tmp_path: Path, any_db: Path | str) -> TestClient:
    settings = make_settings(tmp_path, any_db, jobs=JOBS, commands=COMMANDS)
    return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]


async def post(client: TestClient, job: str, headers: dict[str, str], **query: Any) -> int:
    response = await client.post(
        f"{BASE}/jobs/{job}", json={}, headers=headers, params={k: str(v) for k, v in query.items()}
    )
    assert response.status == 201, await response.text()
    return int((await response.json())["task_id"])


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def of_task(exporter: InMemorySpanExporter, task_id: int) -> list[ReadableSpan]:
    return [
        s
        for s in exporter.get_finished_spans()
        if (s.attributes or {}).get("sidetask.task.id") == task_id
    ]


async def finished(exporter: InMemorySpanExporter, task_id: int, count: int) -> list[ReadableSpan]:
    """The task's spans once `count` of them have ended (the last ends as its job returns)."""

    async def probe() -> list[ReadableSpan] | None:
        found = of_task(exporter, task_id)
        return found if len(found) >= count else None

    return await wait_for(probe, 10, f"{count} spans of task {task_id}")


# --- the trace context, kept and shown (tracing off) ---


async def test_a_submitted_trace_context_is_kept_and_shown(plain: TestClient) -> None:
    task_id = await post(
        plain, "traced_async", {"traceparent": TRACEPARENT, "tracestate": "vendor=a1, other=b2"}
    )
    task = await wait_status(plain, BASE, task_id, "success")
    assert task["task_traceparent"] == TRACEPARENT
    assert task["task_tracestate"] == "vendor=a1,other=b2"
    keys = list(task)
    assert keys.index("task_traceparent") > keys.index("task_input")  # after HugeGraph's keys
    # tracing off: the job gets the context it was submitted with, to pass on
    assert orjson.loads(task["task_result"]) == {
        "traceparent": TRACEPARENT,
        "tracestate": "vendor=a1,other=b2",
    }
    listed = (await (await plain.get(f"{BASE}/tasks", params={"ids": str(task_id)})).json())[
        "tasks"
    ][0]
    assert listed["task_traceparent"] == TRACEPARENT


@pytest.mark.parametrize(
    "header",
    [
        "not a traceparent",
        f"00-{TRACE_ID}-{PARENT_ID}",  # a field missing
        f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",  # upper case
        f"00-{'0' * 32}-{PARENT_ID}-01",  # the all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # the all-zero parent id
        f"ff-{TRACE_ID}-{PARENT_ID}-01",  # the forbidden version
        f"{TRACEPARENT}-extra",  # version 00 with more after it
    ],
)
async def test_a_malformed_traceparent_is_ignored(plain: TestClient, header: str) -> None:
    task_id = await post(plain, "traced_async", {"traceparent": header, "tracestate": "v=1"})
    task = await get_task(plain, BASE, task_id)
    assert "task_traceparent" not in task and "task_tracestate" not in task


async def test_a_later_version_is_kept_as_00_and_a_bad_tracestate_dropped(
    plain: TestClient,
) -> None:
    task_id = await post(
        plain,
        "traced_async",
        {"traceparent": f"01-{TRACE_ID}-{PARENT_ID}-01-future", "tracestate": "Bad Key=1"},
    )
    task = await get_task(plain, BASE, task_id)
    assert task["task_traceparent"] == TRACEPARENT
    assert "task_tracestate" not in task
    alone = await post(plain, "traced_async", {"tracestate": "vendor=1"})
    assert "task_tracestate" not in await get_task(plain, BASE, alone)
    too_long = ",".join(f"k{i}={'v' * 40}" for i in range(20))
    long_id = await post(
        plain, "traced_async", {"traceparent": TRACEPARENT, "tracestate": too_long}
    )
    assert "task_tracestate" not in await get_task(plain, BASE, long_id)


async def test_a_command_gets_the_trace_context_in_its_environment(plain: TestClient) -> None:
    task_id = await post(plain, "env", {"traceparent": TRACEPARENT})
    task = await wait_status(plain, BASE, task_id, "success")
    assert orjson.loads(task["task_result"])["output"].strip() == TRACEPARENT


# --- spans (tracing on) ---


async def test_spans_of_submit_queue_and_attempt_continue_the_submitted_trace(
    traced: TestClient, spans: InMemorySpanExporter
) -> None:
    task_id = await post(traced, "traced_async", {"traceparent": TRACEPARENT, "tracestate": "v=1"})
    task = await wait_status(traced, BASE, task_id, "success")
    found = await finished(spans, task_id, 3)
    by_name = {s.name: s for s in found}
    assert set(by_name) == {"sidetask.submit", "sidetask.queue", "sidetask.attempt"}
    for span in found:
        assert span.context is not None and span.parent is not None
        assert _hex(span.context.trace_id, 32) == TRACE_ID
        assert _hex(span.parent.span_id, 16) == PARENT_ID  # the submitted header's
        assert span.parent.is_remote
        assert span.attributes is not None
        assert span.attributes["sidetask.task.type"] == "traced_async"
    attempt = by_name["sidetask.attempt"]
    assert attempt.attributes is not None
    assert attempt.attributes["sidetask.attempt"] == 1
    assert attempt.attributes["sidetask.outcome"] == "success"
    assert by_name["sidetask.queue"].attributes["sidetask.attempt"] == 1  # type: ignore[index]
    assert attempt.context is not None
    # the job's own span is the attempt's child, and ctx.traceparent names the attempt
    (job_span,) = [s for s in spans.get_finished_spans() if s.name == "job.async"]
    assert job_span.parent is not None
    assert job_span.parent.span_id == attempt.context.span_id
    result = orjson.loads(task["task_result"])
    assert result["traceparent"] == f"00-{TRACE_ID}-{_hex(attempt.context.span_id, 16)}-01"
    assert result["tracestate"] == "v=1"
    # the stored context stays the submitted one
    assert task["task_traceparent"] == TRACEPARENT


async def test_each_attempt_has_its_span_with_its_outcome(
    traced: TestClient, spans: InMemorySpanExporter
) -> None:
    task_id = await post(traced, "fails_once", {"traceparent": TRACEPARENT}, max_retries=1)
    await wait_status(traced, BASE, task_id, "success", timeout=30)
    found = await finished(spans, task_id, 5)
    attempts = sorted(
        (s for s in found if s.name == "sidetask.attempt"),
        key=lambda s: s.attributes["sidetask.attempt"],  # type: ignore[index]
    )
    assert [(s.attributes or {}).get("sidetask.outcome") for s in attempts] == ["failed", "success"]
    assert [(s.attributes or {}).get("sidetask.attempt") for s in attempts] == [1, 2]
    assert not attempts[0].status.is_ok and attempts[0].status.description == "out of disk"
    queues = [s for s in found if s.name == "sidetask.queue"]
    assert sorted((s.attributes or {}).get("sidetask.attempt") for s in queues) == [1, 2]


async def test_a_thread_and_a_child_process_run_under_the_attempt_span(
    traced: TestClient, spans: InMemorySpanExporter
) -> None:
    thread_id = await post(traced, "traced_thread", {"traceparent": TRACEPARENT})
    child_id = await post(traced, "traced_child", {"traceparent": TRACEPARENT})
    thread_task = await wait_status(traced, BASE, thread_id, "success", timeout=30)
    child_task = await wait_status(traced, BASE, child_id, "success", timeout=30)
    thread_attempt = next(
        s for s in await finished(spans, thread_id, 3) if s.name == "sidetask.attempt"
    )
    child_attempt = next(
        s for s in await finished(spans, child_id, 3) if s.name == "sidetask.attempt"
    )
    assert thread_attempt.context is not None and child_attempt.context is not None
    (job_span,) = [s for s in spans.get_finished_spans() if s.name == "job.thread"]
    assert job_span.parent is not None
    assert job_span.parent.span_id == thread_attempt.context.span_id
    span_id = _hex(child_attempt.context.span_id, 16)
    assert orjson.loads(thread_task["task_result"])["traceparent"].split("-")[2] == _hex(
        thread_attempt.context.span_id, 16
    )
    assert orjson.loads(child_task["task_result"]) == {
        "traceparent": f"00-{TRACE_ID}-{span_id}-01",
        "current": span_id,
    }


async def test_a_submission_without_a_context_starts_a_trace_of_its_own(
    traced: TestClient, spans: InMemorySpanExporter
) -> None:
    task_id = await post(traced, "traced_async", {})
    task = await wait_status(traced, BASE, task_id, "success")
    found = {s.name: s for s in await finished(spans, task_id, 3)}
    submit_span = found["sidetask.submit"]
    assert submit_span.parent is None and submit_span.context is not None
    # the task is kept under the submission's span: its queue wait and attempt are children
    trace_id, span_id = (
        _hex(submit_span.context.trace_id, 32),
        _hex(submit_span.context.span_id, 16),
    )
    assert task["task_traceparent"].startswith(f"00-{trace_id}-{span_id}-")
    for name in ("sidetask.queue", "sidetask.attempt"):
        parent = found[name].parent
        assert parent is not None and _hex(parent.span_id, 16) == span_id


# --- without the extra ---


def test_tracing_on_without_the_extra_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tracing, "available", lambda: False)
    with pytest.raises(ConfigError, match=r"tracing: needs OpenTelemetry.*sidetask\[otel\]"):
        config.load(env={}, tracing=True)
    assert config.load(env={}).tracing is False


def test_with_tracing_off_nothing_of_opentelemetry_is_imported(tmp_path: Path) -> None:
    """A real server in a fresh interpreter runs a traced submission to its end, and no
    module of OpenTelemetry has been loaded."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from aiohttp.test_utils import TestClient, TestServer
        from service import config
        from service.web import create_app

        async def main():
            settings = config.load(env={{}}, db={str(tmp_path / "t.db")!r})
            async with TestClient(TestServer(create_app(settings))) as client:
                response = await client.post(
                    "/graphs/hugegraph/jobs/echo", json={{"a": 1}},
                    headers={{"traceparent": {TRACEPARENT!r}}},
                )
                task_id = (await response.json())["task_id"]
                for _ in range(1000):
                    task = await (await client.get(f"/graphs/hugegraph/tasks/{{task_id}}")).json()
                    if task["task_status"] == "success":
                        break
                    await asyncio.sleep(0.01)
                print(task["task_status"], task["task_traceparent"])
            print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))

        asyncio.run(asyncio.wait_for(main(), 60))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stderr
    status, imported = done.stdout.strip().splitlines()
    assert status == f"success {TRACEPARENT}"
    assert imported == "[]"


async def test_sidetask_serve_exports_the_spans_it_makes(server_factory: Any, http: Any) -> None:
    """A real `sidetask serve` with tracing on and no tracer provider of its own sets up
    the SDK's, exporting as OTEL_TRACES_EXPORTER says (console here); the spans still
    batched go out as it stops."""
    server = server_factory(env={"SIDETASK_TRACING": "true", "OTEL_TRACES_EXPORTER": "console"})
    await server.wait_ready()
    async with http.post(
        f"{server.url}{BASE}/jobs/echo", json={"a": 1}, headers={"traceparent": TRACEPARENT}
    ) as response:
        assert response.status == 201
        task_id = (await response.json())["task_id"]

    async def succeeded() -> bool:
        async with http.get(f"{server.url}{BASE}/tasks/{task_id}") as answer:
            return (await answer.json())["task_status"] == "success"

    await wait_for(succeeded, 10, "the task to succeed")
    assert server.terminate() == 0
    output = server.output()
    for name in ("sidetask.submit", "sidetask.queue", "sidetask.attempt"):
        assert f'"name": "{name}"' in output
    assert f'"trace_id": "0x{TRACE_ID}"' in output
    assert "tracing: spans of sidetask exported by console" in output

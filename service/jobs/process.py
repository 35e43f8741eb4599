"""Process jobs: a job function of your own run in a child process, which a cancel or a
timeout really stops (Python cannot stop a thread).

A job type declared `[jobs.NAME] call = "module:callable"` with `run_in = "process"` runs
each task in a new Python process of its own session, as command jobs do (its process
group id is its pid, stored with the task before the job waits on it, so that a service
that crashed stops the group at its next start). A cancel, a task timeout or a drain past
its grace sends the group SIGTERM, then SIGKILL after `kill_grace` seconds.

The child gets two JSON lines on its stdin, the request (the callable, the service's
`sys.path`, the task, the settings) and the task's input (on a line of its own, so that
an input nested as deep as allowed is not nested one level deeper), imports the job's module as the service does, and writes JSON lines
on a pipe of its own (stdout and stderr stay the service's): `{"progress": N}` as the job
reports it, with `"total"` once it declared one (coalesced to one line per
`progress_interval`), then one of `{"result": …}`
and `{"error": "Type: message", "permanent": bool}`. SIGTERM sets `ctx.cancelled` and
raises JobCancelled in the job (an async job is cancelled at its await), so its `finally`
blocks run; a job may install a SIGTERM handler of its own instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

import orjson

from .. import jsontext
from ..config import Settings
from ..model import LOG_LEVEL_INDEX, LOG_LEVELS, GraphRef
from . import capture
from .base import (
    ChildError,
    JobCancelled,
    JobContext,
    JobFunction,
    JobType,
    PermanentFailure,
    ReportedFailure,
    bound_line,
    describe_error,
    error_name,
    format_traceback,
    load_function,
)
from .command import _exit_text, drained, held_group

#: log lines in one message of the child's (each at most max_log_line_chars): a message
#: stays well within the pipe's bound
LINES_PER_MESSAGE = 200

log = logging.getLogger("sidetask.jobs")

#: what the child runs: read the request, take the service's import path, run the job
BOOTSTRAP = (
    "import json, sys\n"
    "request = json.loads(sys.stdin.buffer.readline())\n"
    "sys.path[:] = request['path']\n"
    "from service.jobs.process import child\n"
    "sys.exit(child(request, int(sys.argv[1])))\n"
)
#: bytes of a message line beyond the result limit that the service still reads
MESSAGE_SLACK = 64 * 1024


def job_type(name: str, call: str) -> JobType:
    """The job type of a function run in a child process. The function is imported here
    too, so that a declaration that cannot be used is refused at start (ValueError)."""
    path, _ = load_function(call)
    return JobType(name, path, functools.partial(run, call))


# --- the service's side ---


class _Messages(asyncio.Protocol):
    """Reads the child's JSON lines: progress (and its total) is reported as it comes, the
    last other message is the job's end."""

    def __init__(
        self,
        report: Callable[[int, int | None], None],
        limit: int,
        checkpoint: Callable[[str], None] = lambda text: None,
        log: Callable[[int, int, str], None] = lambda time_ms, level, text: None,
    ) -> None:
        self._report = report
        self._checkpoint = checkpoint
        self._log = log
        self._limit = limit
        self._partial = bytearray()
        self.end: dict[str, Any] | None = None
        #: a line longer than the limit was dropped (the child's own check failed)
        self.oversized = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self._partial += data
        *lines, rest = self._partial.split(b"\n")
        self._partial = bytearray(rest)
        for line in lines:
            self._line(bytes(line))
        if len(self._partial) > self._limit:
            self.oversized = True
            self._partial.clear()

    def _line(self, line: bytes) -> None:
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError:
            return  # not the child's (a line cut by an oversized one): ignored
        if not isinstance(message, dict):
            return
        if isinstance(message.get("checkpoint"), str):  # sent before the progress it goes with
            self._checkpoint(message["checkpoint"])
            return
        if isinstance(message.get("log"), list):  # [[epoch ms, level, text], …]
            for entry in message["log"]:
                if (
                    isinstance(entry, list)
                    and len(entry) == 3
                    and type(entry[0]) is int
                    and type(entry[1]) is int
                    and isinstance(entry[2], str)
                ):
                    self._log(entry[0], min(max(entry[1], 0), len(LOG_LEVELS) - 1), entry[2])
            return
        progress, total = message.get("progress"), message.get("total")
        if isinstance(progress, int) and not isinstance(progress, bool):
            declared = total if isinstance(total, int) and not isinstance(total, bool) else None
            self._report(progress, declared if declared is not None and declared >= 1 else None)
        elif "result" in message or "error" in message:
            self.end = message

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def run(call: str, ctx: JobContext) -> Any:
    """Runs the job in a child process to its end and returns its result; its failure is
    raised as the same text an in-process job's would be. A cancel (the API's, the task's
    timeout, a drain) stops the child's process group before the cancel goes on."""
    settings = ctx.settings
    request = orjson.dumps(
        {
            "call": call,
            "path": sys.path,
            "task_id": ctx.task_id,
            "graph": [ctx.graph.graphspace, ctx.graph.graph],
            "retries": ctx.retries,
            "checkpoint": ctx.checkpoint_value,
            "last_progress": ctx.last_progress,
            "last_progress_total": ctx.last_progress_total,
            "traceparent": ctx.traceparent,
            "tracestate": ctx.tracestate,
            "settings": settings_values(settings),
        }
    )
    job_input = orjson.dumps(ctx.input)  # read from JSON, so it can be written again
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            BOOTSTRAP,
            str(write_fd),
            stdin=asyncio.subprocess.PIPE,
            pass_fds=(write_fd,),
            env={**os.environ, "SIDETASK_TASK_ID": str(ctx.task_id)},
            start_new_session=True,  # its own process group: pgid == pid
        )
    except OSError as exc:
        os.close(read_fd)
        raise ReportedFailure(f"The job's process could not start: {exc}") from None
    finally:
        os.close(write_fd)  # the child's end: the pipe closes when the child's copy does
    pipe = os.fdopen(read_fd, "rb", buffering=0)
    group = process.pid
    grace = settings.kill_grace
    limit = settings.max_result_bytes + MESSAGE_SLACK
    transport: asyncio.BaseTransport | None = None
    try:
        async with held_group(ctx, group, grace):
            transport, messages = await loop.connect_read_pipe(
                lambda: _Messages(
                    lambda value, total: ctx.progress(value, total),
                    limit,
                    functools.partial(_checkpointed, ctx),
                    functools.partial(_logged, ctx),
                ),
                pipe,
            )
            assert process.stdin is not None
            with contextlib.suppress(ConnectionError):  # it died at once: its exit says how
                process.stdin.write(request + b"\n" + job_input + b"\n")
                await process.stdin.drain()
                process.stdin.close()
            await process.wait()
        await drained(messages.closed)
    finally:
        if transport is not None:
            transport.close()  # closes the pipe too
        else:
            pipe.close()
    return _outcome(messages, process.returncode, settings)


def _outcome(messages: _Messages, code: int | None, settings: Settings) -> Any:
    end = messages.end
    if end is None:
        if messages.oversized:
            raise PermanentFailure(
                "The job's result is over the limit of "
                f"{settings.max_result_bytes} bytes (max_result_bytes)"
            )
        raise ReportedFailure(f"The job's process {_exit_text(code)} before the job returned")
    if "result" in end:
        return end["result"]
    text = str(end.get("error"))
    failure = PermanentFailure(text) if end.get("permanent") is True else ReportedFailure(text)
    failure.child_error = ChildError(
        *(value if isinstance(value, str) else None for value in
          (end.get("type"), end.get("message"), end.get("traceback")))
    )  # fmt: skip
    raise failure


def settings_values(settings: Settings) -> dict[str, Any]:
    """The settings as JSON values that `config.load(**values)` turns back into them."""
    return {f.name: _plain(getattr(settings, f.name)) for f in dataclasses.fields(settings)}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _checkpointed(ctx: JobContext, text: str) -> None:
    """A checkpoint the child sent: stored as the job's, checked again here (a child's
    message is only as sound as the job that wrote it)."""
    try:
        ctx.checkpoint(orjson.loads(text))
    except ValueError as exc:
        log.warning("task %d: a checkpoint from its process was refused: %s", ctx.task_id, exc)


def _logged(ctx: JobContext, time_ms: int, level: int, text: str) -> None:
    """A line the child sent: bounded again here, as the job's."""
    ctx._report_log(time_ms, level, bound_line(text, ctx.settings))


# --- the child's side ---


class _Pipe:
    """The child's end of the message pipe. Progress is kept and sent by a thread at most
    once per `interval` (a job may report in a tight loop); the end is sent after the
    latest progress."""

    def __init__(self, fd: int, interval: float) -> None:
        self._fd = fd
        self._interval = interval
        self._lock = threading.Lock()
        self._latest: int | None = None
        self._total: int | None = None
        #: the job's latest checkpoint (JSON text), until it is sent
        self._checkpoint: str | None = None
        #: the job's log lines since the last write: [epoch ms, level, text]
        self._lines: list[list[Any]] = []
        self._max_lines = 10_000
        #: the (progress, total) last written
        self._sent: tuple[int | None, int | None] = (None, None)
        self._changed = threading.Event()
        threading.Thread(target=self._flush_loop, name="sidetask-progress", daemon=True).start()

    def progress(self, value: int) -> None:
        self._latest = value
        self._changed.set()

    def checkpoint(self, text: str) -> None:
        self._checkpoint = text  # checked by the context already
        self._changed.set()

    def total(self, value: int) -> None:
        self._total = value  # sent with the progress value the context reports next

    def log(self, time_ms: int, level: int, text: str) -> None:
        with self._lock:
            self._lines.append([time_ms, level, text])
            if len(self._lines) > 2 * self._max_lines:  # the service would drop them anyway
                cut = len(self._lines) - self._max_lines
                del self._lines[:cut]
                note = f"… {cut} lines dropped before they were written (max_log_lines)"
                self._lines.insert(0, [time_ms, LOG_LEVEL_INDEX["warning"], note])
        self._changed.set()

    def _flush_loop(self) -> None:
        while True:
            self._changed.wait()
            self._changed.clear()
            self._flush()
            time.sleep(self._interval)

    def _flush(self) -> None:
        with self._lock:
            checkpoint, self._checkpoint = self._checkpoint, None
            if checkpoint is not None:
                self._write({"checkpoint": checkpoint})
            lines, self._lines = self._lines, []
            for start in range(0, len(lines), LINES_PER_MESSAGE):
                self._write({"log": lines[start : start + LINES_PER_MESSAGE]})
            latest = (self._latest, self._total)
            if latest[0] is not None and latest != self._sent:
                message = {"progress": latest[0]}
                if latest[1] is not None:
                    message["total"] = latest[1]
                self._write(message)
                self._sent = latest

    def end(self, message: bytes) -> None:
        if capture.whole_process is not None:  # its last printed line, unfinished
            capture.job_ended(capture.whole_process)
        self._flush()
        with self._lock:
            self._write(message)

    def _write(self, message: dict[str, Any] | bytes) -> None:
        encoded = message if isinstance(message, bytes) else orjson.dumps(message)
        data = memoryview(encoded + b"\n")
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError:
            pass  # the service is gone: what the job reports has no reader any more


def child(request: dict[str, Any], fd: int) -> int:
    """The child process: runs the job of `request` (its input on the next line of stdin)
    and writes its end on `fd`."""
    cancel = threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        cancel.set()
        raise JobCancelled(f"task {request['task_id']} was cancelled")

    signal.signal(signal.SIGTERM, on_sigterm)
    interval = float(request["settings"].get("progress_interval") or 0.1)
    traceback_chars = int(request["settings"].get("max_traceback_chars") or 0)
    pipe = _Pipe(fd, interval)
    try:
        from .. import config  # here: the request's sys.path is in place

        settings = config.load(env={}, **request["settings"])
        ctx = JobContext(
            task_id=int(request["task_id"]),
            graph=GraphRef(*request["graph"]),
            input=orjson.loads(sys.stdin.buffer.readline()),
            settings=settings,
            retries=int(request["retries"]),
            checkpoint_value=request.get("checkpoint"),
            last_progress=int(request.get("last_progress") or 0),
            last_progress_total=request.get("last_progress_total"),
            max_checkpoint_bytes=settings.max_checkpoint_bytes,
            traceparent=request.get("traceparent"),
            tracestate=request.get("tracestate"),
            _report=pipe.progress,
            _report_total=pipe.total,
            _report_checkpoint=pipe.checkpoint,
            _report_log=pipe.log,
            _cancel=cancel,
        )
        pipe._max_lines = settings.max_log_lines
        capture.whole_process = ctx  # its logging and print are the job's lines
        capture.install()
        if settings.tracing and ctx.traceparent is not None:
            _enter_trace(ctx.traceparent, ctx.tracestate)
        _, function = load_function(request["call"])
        value = _call(function, ctx, cancel)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # done: a stop now needs no cleanup
        pipe.end(_result(value, settings.max_result_bytes))
    except PermanentFailure as exc:
        pipe.end(_error(describe_error(exc, with_type=False), True, exc, traceback_chars))
    except BaseException as exc:  # everything the job raises is its failure, as in the service
        pipe.end(_error(describe_error(exc), False, exc, traceback_chars))
    return 0


def _call(function: JobFunction, ctx: JobContext, cancel: threading.Event) -> Any:
    if not inspect.iscoroutinefunction(function):
        return function(ctx)

    async def main() -> Any:
        task = asyncio.current_task()
        assert task is not None

        def on_sigterm() -> None:
            cancel.set()
            task.cancel()  # the job is cancelled at its await, as in the service

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_sigterm)
        return await function(ctx)

    return asyncio.run(main())


def _result(value: Any, limit: int) -> bytes:
    """The end message of a returned value, or the failure the service would record."""
    try:
        encoded = jsontext.dumps(value, "The job's result")
    except jsontext.TooDeep as exc:
        return _error(str(exc), permanent=True)
    except TypeError as exc:
        return _error(f"The job's result is not JSON-serialisable: {exc}", permanent=True)
    if len(encoded) > limit:
        return _error(
            f"The job's result is {len(encoded)} bytes of JSON, over the limit of "
            f"{limit} bytes (max_result_bytes)",
            permanent=True,
        )
    return b'{"result":' + encoded + b"}"


def _error(
    text: str, permanent: bool, exc: BaseException | None = None, traceback_chars: int = 0
) -> bytes:
    """The job's failure: the task's text, and the exception's type, message and traceback
    (its last `traceback_chars` characters) apart, for its attempt."""
    message: dict[str, Any] = {"error": text, "permanent": permanent}
    if exc is not None:
        message["type"] = error_name(exc)
        message["message"] = describe_error(exc, with_type=False)
        if traceback_chars:
            message["traceback"] = format_traceback(exc, traceback_chars)
    return orjson.dumps(message)


def _enter_trace(traceparent: str, tracestate: str | None) -> None:
    """The child's job runs under its attempt's span (the service's, as a remote parent):
    spans the job makes through a tracer provider it sets up are that attempt's children."""
    from opentelemetry import context as otel_context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {"traceparent": traceparent}
    if tracestate is not None:
        carrier["tracestate"] = tracestate
    otel_context.attach(TraceContextTextMapPropagator().extract(carrier))

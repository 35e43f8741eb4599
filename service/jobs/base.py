"""The job contract: an async (or plain) function of a JobContext returning a JSON value."""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import inspect
import threading
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .. import clock, jsontext
from ..config import Settings
from ..model import GraphRef, log_level

#: a job: `async def run(ctx) -> value`, or a plain `def run(ctx)` run in a worker thread
JobFunction = Callable[["JobContext"], Any]


#: the most of an error's text kept as a failed task's result
MAX_ERROR_CHARS = 64 * 1024


def describe_error(exc: BaseException, with_type: bool = True, limit: int = MAX_ERROR_CHARS) -> str:
    """An error as a task's result: `Type: message`, whatever the exception's `__str__`
    does (raise, return text that is not UTF-8, return megabytes)."""
    try:
        text = str(exc)
    except Exception:
        text = "(its message could not be read)"
    if with_type:
        text = f"{type(exc).__name__}: {text}"
    text = text.encode("utf-8", "replace").decode()
    return text if len(text) <= limit else text[:limit] + " …(cut)"


def error_name(exc: BaseException) -> str:
    """An exception's type as an attempt shows it: `ValueError`, `myjobs.OutOfDisk`."""
    kind = type(exc)
    if kind.__module__ in ("builtins", "__main__"):
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


#: the files of the code that runs a job (the supervisor, a thread, a child process): their
#: frames above the job's own are left out of its traceback
_HERE = Path(__file__).parent
_RUNNERS = frozenset(
    str(path) for path in (_HERE / "base.py", _HERE / "process.py", _HERE.parent / "supervisor.py")
)


def format_traceback(exc: BaseException, limit: int) -> str:
    """The exception's traceback as Python prints it, from the job's own frames (those of
    the code that ran it left out), bounded to its last `limit` characters (the innermost
    frames and the error, what a reader looks at first)."""
    try:
        tb = exc.__traceback__
        while (
            tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename in _RUNNERS
        ):
            tb = tb.tb_next
        text = "".join(traceback.format_exception(type(exc), exc, tb))
    except Exception:  # an exception whose formatting raises: its type is still known
        text = f"(the traceback could not be formatted)\n{type(exc).__name__}\n"
    text = text.encode("utf-8", "replace").decode()
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    return f"…({cut} characters cut)…\n" + text[cut:]


@dataclass(frozen=True)
class ChildError:
    """How a job failed in a child process, as the child put it: its exception's type,
    message and traceback (an attempt shows these, not the service's re-raise)."""

    type: str | None
    message: str | None
    traceback: str | None


def bound_line(text: str, settings: Settings) -> str:
    """A log line within max_log_line_chars: a longer one cut, with a mark."""
    limit = settings.max_log_line_chars
    if len(text) <= limit:
        return text
    return text[: limit - 12] + " …(cut)"


class PermanentFailure(Exception):
    """Raised by a job whose failure a retry cannot mend (bad input, missing configuration):
    the task ends `failed` at once, whatever retries it has left."""

    #: set when the failure happened in a child process (run_in = "process")
    child_error: ChildError | None = None


class JobCancelled(asyncio.CancelledError):
    """Raised by `JobContext.raise_if_cancelled` once a cancel was requested or the task's
    timeout passed. A CancelledError (so a BaseException, which `except Exception` does not
    swallow): the task ends `cancelled`, or fails saying it timed out."""


class ReportedFailure(Exception):
    """A failure already put into words elsewhere (a job in a child process): its text is
    the task's result as it is, without a type name in front."""

    #: the child's own account of it, when it gave one
    child_error: ChildError | None = None


@dataclass
class JobContext:
    """What a running job is given."""

    #: the task's id
    task_id: int
    #: the graph the task belongs to
    graph: GraphRef
    #: the task's input, decoded from JSON (None when it has none)
    input: Any
    #: the service's settings
    settings: Settings
    #: how many times this task has been re-run before this run
    retries: int = 0
    #: the last checkpoint stored for the task (by an earlier attempt, or this one's last
    #: `checkpoint`), decoded; None when there is none: a job resumes from it
    checkpoint_value: Any = None
    #: what the task's dependencies returned (task_dependencies: README, "Dependencies"),
    #: by task id, decoded from JSON; empty for a task without dependencies
    dependency_results: dict[int, Any] = field(default_factory=dict)
    #: the task's progress (and its declared total) when this attempt started: where the
    #: attempts before it got to (0 and None at the first)
    last_progress: int = 0
    last_progress_total: int | None = None
    #: the most bytes of JSON a checkpoint may have (setting max_checkpoint_bytes)
    max_checkpoint_bytes: int = 64 * 1024
    _report: Callable[[int], None] = field(default=lambda value: None, repr=False)
    #: where a declared total goes (task_progress_total)
    _report_total: Callable[[int], None] = field(default=lambda total: None, repr=False)
    #: the W3C trace context the job runs under, for a job that passes it on (an HTTP
    #: call's `traceparent` header): its attempt's span when tracing is on, else the one
    #: the task was submitted with; None: none
    traceparent: str | None = None
    tracestate: str | None = None
    #: where a checkpoint goes (its JSON text)
    _report_checkpoint: Callable[[str], None] = field(default=lambda text: None, repr=False)
    #: where a log line goes: (epoch ms, level index, text bounded by max_log_line_chars)
    _report_log: Callable[[int, int, str], None] = field(
        default=lambda time_ms, level, text: None, repr=False
    )
    _record_process: Callable[[int | None, str | None], Awaitable[None]] | None = field(
        default=None, repr=False
    )
    #: set when a cancel is requested or the timeout passes (by the supervisor, from the loop)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    #: whether the service has stopped waiting for this job (a drain whose grace ran out)
    _abandoned: Callable[[], bool] = field(default=lambda: False, repr=False)

    @property
    def cancelled(self) -> bool:
        """True once a cancel of the task was requested or its timeout passed. A plain
        function (whose thread Python cannot interrupt) tests it in its loop to stop early.
        Safe from any thread."""
        return self._cancel.is_set()

    def raise_if_cancelled(self) -> None:
        """Raises JobCancelled when `cancelled` is true: the task then ends `cancelled` (or
        failed, when it was its timeout), not `failed` with an error."""
        if self._cancel.is_set():
            raise JobCancelled(f"task {self.task_id} was cancelled")

    def progress(self, value: int, total: int | None = None) -> None:
        """Reports progress: `value` of `total` when the job knows its total (stored as
        task_progress_total, so that clients show "54 of 60"; once given, it stays until
        another is given). Cheap to call in a tight loop: writes are coalesced, and the
        latest value is always the one that ends up stored. Safe from a worker thread."""
        if total is not None:
            if int(total) < 1:
                raise ValueError(f"a progress total must be at least 1, got {total!r}")
            self._report_total(int(total))
        self._report(int(value))

    def checkpoint(self, value: Any) -> None:
        """Stores `value` (JSON: a small dict, a list, a number) as where the job has got
        to: an attempt that runs the task again (a retry, a restore after a crash) finds
        it as `checkpoint_value` and can go on from there instead of starting over.
        Written with the progress (coalesced, every progress_interval) and with the
        attempt's end, in the same transactions; safe from a worker thread. A value that
        is not JSON, or more than max_checkpoint_bytes of it, raises ValueError here."""
        try:
            encoded = jsontext.dumps(value, "The checkpoint")
        except TypeError as exc:
            raise ValueError(f"a checkpoint must be a JSON value: {exc}") from None
        if len(encoded) > self.max_checkpoint_bytes:
            raise ValueError(
                f"the checkpoint is {len(encoded)} bytes of JSON, over the limit of "
                f"{self.max_checkpoint_bytes} bytes (max_checkpoint_bytes): keep where the "
                "job got to, not its data"
            )
        self.checkpoint_value = orjson.loads(encoded)  # a copy: later changes are not stored
        self._report_checkpoint(encoded.decode())

    def log(self, message: object, level: str = "info") -> None:
        """Writes a line to the task's log (GET …/tasks/{id}/logs, task.log events,
        `sidetask logs`): `level` one of debug, info, warning, error. Cheap in a tight loop
        (lines are buffered and written with the progress); safe from a worker thread.
        A line longer than max_log_line_chars is cut, with a mark."""
        self._report_log(clock.now_ms(), log_level(level), bound_line(str(message), self.settings))

    async def record_process_group(self, group: int | None, token: str | None) -> None:
        """Stores the id of a process group the job started (None: it is gone), so that a
        service that crashed can stop it at its next start. `token` tells the group apart
        from a later one with the same id."""
        if self._record_process is not None:
            await self._record_process(group, token)


@dataclass(frozen=True)
class JobType:
    name: str
    #: dotted path of the code, shown as task_callable
    callable_path: str
    function: JobFunction
    #: checks a submission's input (decoded JSON); raises ValueError with a message for the
    #: submitter, which becomes a 400 at submit time
    validate: Callable[[Any], None] | None = None

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.function)

    async def run(self, ctx: JobContext) -> Any:
        if self.is_async:
            return await self.function(ctx)
        return await run_in_thread(self.function, ctx)


async def run_in_thread(function: JobFunction, ctx: JobContext) -> Any:
    """A plain function must not block the event loop, so it runs in a thread of its own.
    Not asyncio's shared pool: it has fewer threads than a large `concurrency`, and the
    loop's shutdown joins its threads, so one job that never ends would keep the process
    from exiting after a drain. This thread is a daemon: a drain leaves it behind.

    Python cannot stop a thread. A cancel or a timeout sets `ctx.cancelled`, and then this
    waits for the function to return before the cancel goes on: the job keeps its slot (so
    the concurrency limits hold) and its task stays `cancelling` or `running`, so a retry
    cannot start a second run of it beside the first. Only a drain whose grace has run out
    stops waiting (`ctx._abandoned`): the task is restored at the next start."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()  # as asyncio.to_thread: log context follows the job

    def settle(outcome: Callable[[], None]) -> None:
        if not done.done():
            outcome()

    def hand_over(outcome: Callable[[], None]) -> None:
        try:
            loop.call_soon_threadsafe(settle, outcome)
        except RuntimeError:  # the loop is closed: a drain left this job, no one waits for it
            pass

    def work() -> None:
        try:
            value = context.run(function, ctx)
        except BaseException as exc:  # handed to the awaiting job, which decides
            error = exc
            hand_over(lambda: done.set_exception(error))
        else:
            hand_over(lambda: done.set_result(value))

    threading.Thread(target=work, name=f"sidetask-job-{ctx.task_id}", daemon=True).start()
    cancelled = False
    while not done.done():
        try:
            # asyncio.wait, not `await done`: a cancel must not cancel `done`, which only
            # the thread settles
            await asyncio.wait([done])
        except asyncio.CancelledError:
            ctx._cancel.set()
            if ctx._abandoned():
                raise  # a drain gave up on the job: its thread runs on, left behind
            cancelled = True
    if cancelled:
        # The cancel (or the timeout) decides the outcome, whatever the function returned
        # or raised (retrieved, so that asyncio does not report it as never retrieved).
        done.exception()
        raise asyncio.CancelledError
    return done.result()


def load_function(spec: str) -> tuple[str, JobFunction]:
    """`module:callable` -> (dotted path, the function); ValueError that says what is wrong."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"{spec!r} is not of the form 'module:callable'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # missing, or broken at import: either way it cannot be used
        raise ValueError(
            f"{spec!r}: cannot import {module_name}: {type(exc).__name__}: {exc}"
        ) from None
    target: Any = module
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ValueError(f"{spec!r}: {module_name} has no {attribute}")
    if not callable(target):
        raise ValueError(f"{spec!r} is not callable")
    return f"{module_name}.{attribute}", target

"""A job's own `logging` records and `print` output, captured as its log lines.

Which job wrote something is told by a context variable the supervisor sets in the job's
asyncio task before the job starts (`running`): an async job's records carry it, and so
do a plain function's, whose thread runs in a copy of that task's context (run_in_thread).
A thread the job starts itself sees it only if the job runs it in a copy of its context
(`contextvars.copy_context().run`); anything else, and everything outside a job, goes
where it went before. In a job's child process (run_in = "process") everything is the
job's (`whole_process`), sent to the service over its pipe. The service's own loggers (`sidetask.*`) are never captured.

`install` puts a handler on the root logger and wraps sys.stdout and sys.stderr while a
supervisor runs (counted: several supervisors in one process share them); a job's print
is its line (stdout: info, stderr: warning), the service's output passes through.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from .base import JobContext

#: the job whose context this is (None: not a job's)
running: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar(
    "sidetask_job", default=None
)

#: a job's child process (run_in = "process"): everything it logs and prints is the job's
whole_process: JobContext | None = None


def current() -> JobContext | None:
    """The job whose context this is, or the process's job."""
    return running.get() or whole_process


_LEVELS = ((logging.ERROR, "error"), (logging.WARNING, "warning"), (logging.INFO, "info"))


def level_of(levelno: int) -> str:
    for floor, name in _LEVELS:
        if levelno >= floor:
            return name
    return "debug"


class JobLogHandler(logging.Handler):
    """A job's logging records as its lines (the service's own loggers left out)."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        ctx = current()
        if ctx is None or record.name.startswith("sidetask"):
            return
        try:
            ctx.log(self.format(record), level_of(record.levelno))
        except Exception:  # a record that cannot be formatted: as logging does, not raised
            self.handleError(record)


class JobOutput:
    """sys.stdout or sys.stderr: a job's writes become its lines, line by line (the last
    partial line when the job ends, by `flush_job`); the rest goes to the stream wrapped."""

    def __init__(self, stream: TextIO, level: str) -> None:
        self.wrapped = stream
        self._level = level
        self._lock = threading.Lock()
        #: each job's unfinished line, by its context's id
        self._partial: dict[int, tuple[JobContext, str]] = {}

    def write(self, text: str) -> int:
        ctx = current()
        if ctx is None:
            return self.wrapped.write(text)
        with self._lock:
            _, before = self._partial.pop(id(ctx), (ctx, ""))
            *lines, rest = (before + text).split("\n")
            if rest:
                self._partial[id(ctx)] = (ctx, rest)
        for line in lines:
            ctx.log(line, self._level)
        return len(text)

    def flush_job(self, ctx: JobContext) -> None:
        with self._lock:
            _, rest = self._partial.pop(id(ctx), (ctx, ""))
        if rest:
            ctx.log(rest, self._level)

    def flush(self) -> None:
        if current() is None:
            self.wrapped.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, encoding, isatty, …: the stream's
        return getattr(self.wrapped, name)


_lock = threading.Lock()
_installed = 0
_handler = JobLogHandler()


def install() -> None:
    """Captures jobs' logging and print from now on (until as many `uninstall`s)."""
    global _installed
    with _lock:
        _installed += 1
        if _installed > 1:
            return
        logging.getLogger().addHandler(_handler)
    wrap_streams()


def wrap_streams() -> None:
    """sys.stdout and sys.stderr wrapped, again if something put others in their place
    since (called at each job's start)."""
    if _installed <= 0:
        return
    # a stream that is not there (None: a process started without one) stays so
    if sys.stdout is not None and not isinstance(sys.stdout, JobOutput):
        sys.stdout = JobOutput(sys.stdout, "info")
    if sys.stderr is not None and not isinstance(sys.stderr, JobOutput):
        sys.stderr = JobOutput(sys.stderr, "warning")


def uninstall() -> None:
    global _installed
    with _lock:
        _installed -= 1
        if _installed > 0:
            return
        logging.getLogger().removeHandler(_handler)
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if isinstance(stream, JobOutput):
                setattr(sys, name, stream.wrapped)


def job_ended(ctx: JobContext) -> None:
    """The job's unfinished printed lines, as its last lines."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, JobOutput):
            stream.flush_job(ctx)

"""The job contract: an async (or plain) function of a JobContext returning a JSON value."""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import inspect
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import ConfigError, Settings
from ..model import GraphRef

#: a job: `async def run(ctx) -> value`, or a plain `def run(ctx)` run in a worker thread
JobFunction = Callable[["JobContext"], Any]


class PermanentFailure(Exception):
    """Raised by a job whose failure a retry cannot mend (bad input, missing configuration):
    the task ends `failed` at once, whatever retries it has left."""


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
    _report: Callable[[int], None] = field(default=lambda value: None, repr=False)
    _record_process: Callable[[int | None, str | None], Awaitable[None]] | None = field(
        default=None, repr=False
    )

    def progress(self, value: int) -> None:
        """Reports progress. Cheap to call in a tight loop: writes are coalesced, and the
        latest value is always the one that ends up stored. Safe from a worker thread."""
        self._report(int(value))

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
    Not asyncio's shared pool: it has fewer threads than a large `concurrency`, a cancelled
    plain job (which cannot be interrupted) would keep holding one, and the loop's shutdown
    joins its threads, so one job that never ends would keep the process from exiting after
    a drain. This thread is a daemon: a drain leaves it behind, as it leaves any job."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()  # as asyncio.to_thread: log context follows the job

    def settle(outcome: Callable[[], None]) -> None:
        if not done.done():  # the awaiting job may have been cancelled meanwhile
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
    return await done


class Registry:
    """Job types by name: the built-ins and those the configuration declares."""

    def __init__(self, types: Mapping[str, JobType]) -> None:
        self._types = dict(types)

    def get(self, name: str) -> JobType | None:
        return self._types.get(name)

    def names(self) -> list[str]:
        return sorted(self._types)

    def __contains__(self, name: object) -> bool:
        return name in self._types


BUILTINS = {
    "sleep": "service.jobs.sleep:run",
    "echo": "service.jobs.echo:run",
    "fail": "service.jobs.fail:run",
    "gremlin": "service.jobs.gremlin:run",
}


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


def add_import_paths(paths: Sequence[str]) -> None:
    """Puts `paths` at the front of sys.path, in their order, each once: the job modules
    of a project are found there before anything of the same name elsewhere."""
    for path in reversed(paths):
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)


def build_registry(settings: Settings) -> Registry:
    add_import_paths(settings.import_paths)
    types: dict[str, JobType] = {}
    for name, spec in {**BUILTINS, **settings.jobs}.items():
        try:
            path, function = load_function(spec)
        except ValueError as exc:  # a ConfigError: the service cannot start with this setting
            raise ConfigError(f"jobs.{name}: {exc}") from None
        types[name] = JobType(name, path, function)
    # Declared commands and the types external workers serve: names of their own.
    from .. import workers  # here, at call time: both import this module
    from . import command

    for name, declared in settings.commands.items():
        if name in types:
            raise ConfigError(f"commands.{name}: a job type '{name}' already exists")
        types[name] = command.job_type(name, declared)
    for name in settings.external_types:
        if name in types:
            raise ConfigError(f"external_types: a job type '{name}' already exists")
        types[name] = JobType(name, workers.CALLABLE_PATH, workers.external)
    return Registry(types)

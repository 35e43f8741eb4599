"""A small worker for sidetask's external job types: it claims tasks over HTTP, runs a Python
function for each, reports its progress (which keeps the lease), and stops the function when
a cancel is requested.

    from service.worker import Worker

    async def resize(task):                  # or a plain def, run in a thread
        for i, image in enumerate(task.input["images"]):
            await shrink(image)              # a cancel arrives at an await
            task.progress(i + 1)             # cheap: reports are coalesced
        return {"resized": i + 1}            # the task's result

    asyncio.run(Worker("http://127.0.0.1:8080", "resizer-1", {"resize": resize}).run())

or, from a shell:

    python -m service.worker --url http://127.0.0.1:8080 --name resizer-1 --job resize=myjobs:resize

A function that raises fails the task (retries apply; raise `PermanentFailure` for a failure
a retry cannot mend). A plain function cannot be interrupted: it reads `task.cancel_requested`
and returns early. When the service no longer lets this worker report on a task (its lease
expired, the task was deleted or paused), the function is cancelled and nothing more is sent.

Every request goes through service.client.Client (so its credentials, its errors and its
words for a connection that failed); the pauses between tries are service.backoff's.

A service that cannot be reached, or answers 429, 503 or another 5xx, is tried again (with a
growing pause). Any other 4xx is a configuration error that no retry mends (a type that is
not external, missing or wrong credentials, a token without the grant "*"): `run` raises
`Refused` with the service's message, and `python -m service.worker` exits with status 3.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, cast

import orjson

from . import jsontext
from .backoff import Backoff
from .client import APIError, Client, ClientError, ConnectionFailed
from .jobs import PermanentFailure
from .jobs.base import load_function

__all__ = ["PermanentFailure", "Refused", "TaskLost", "Worker", "WorkerTask", "main"]

log = logging.getLogger("sidetask.worker")

#: a worker's job: `async def f(task) -> value`, or a plain `def f(task)` run in a thread
WorkerFunction = Callable[["WorkerTask"], Any]
#: the shortest time between two progress reports (progress in between is coalesced)
MIN_REPORT_INTERVAL = 0.1
#: how long a report may take before it is tried again
REPORT_TIMEOUT = 10.0
#: the first and the longest pause after the service could not be reached
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 10.0
#: the first and the longest pause between two tries to report a task's end
FIRST_END_RETRY = 0.2
MAX_END_RETRY = 2.0
#: the answers that say "later" (too many requests, unavailable); every 5xx is one too
RETRYABLE = frozenset({408, 429})
#: what `python -m service.worker` exits with when the service refuses it
EXIT_REFUSED = 3


# The worker's errors are the client's APIError (status, message, exception, cause), sorted
# by what the worker does about them; only their words differ.


class TaskLost(APIError):
    """The service refused a report (409: the lease is gone; 404: the task is gone)."""

    def __str__(self) -> str:
        return self.message


class _Answered(APIError):
    """An error answer to one of the worker's requests; `what` names the request."""

    def __init__(
        self, what: str, status: int, message: str, exception: str = "", cause: str = ""
    ) -> None:
        super().__init__(status, message, exception, cause)
        self.what = what


class Refused(_Answered):
    """The service answered a 4xx that no retry mends: the worker is not set up right (a
    type that is not external, missing or wrong credentials, a token without the grant "*").
    `status` is the HTTP status, `message` the service's own words."""

    def __str__(self) -> str:
        return f"the service refused {self.what} (HTTP {self.status}): {self.message}"


class Unavailable(_Answered):
    """The service answered, but cannot serve now (429, 503, another 5xx): tried again."""

    def __str__(self) -> str:
        return f"the service answered {self.what} with HTTP {self.status}: {self.message}"


def _unexpected(what: str, error: APIError) -> APIError:
    """The client's error for an answer the worker did not expect, as the worker sees it."""
    kind = Unavailable if error.status >= 500 or error.status in RETRYABLE else Refused
    return kind(what, error.status, error.message, error.exception, error.cause)


class WorkerTask:
    """What a worker's function is given: the task's id, type and input, and `progress`."""

    def __init__(self, claim: Mapping[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        self.id: int = int(claim["id"])
        self.type: str = str(claim["type"])
        self.input: Any = claim.get("input")
        self.graphspace: str = str(claim.get("graphspace", "DEFAULT"))
        self.graph: str = str(claim.get("graph", ""))
        #: how many times this task was run before
        self.retries: int = int(claim.get("retries", 0))
        self.url: str = str(claim["task_url"])
        self.lease: str = str(claim["lease"])
        self.lease_duration: float = float(claim.get("lease_duration", 30.0))
        #: the last checkpoint an earlier attempt stored (None: none): resume from it
        self.checkpoint_value: Any = claim.get("checkpoint")
        #: the task's progress when claimed: where the attempts before got to
        self.last_progress: int = int(claim.get("progress") or 0)
        self._loop = loop
        self._progress: int | None = None
        #: a checkpoint not sent yet (JSON text)
        self._checkpoint: orjson.Fragment | None = None
        self._changed = asyncio.Event()
        self._cancel = False

    def progress(self, value: int) -> None:
        """Reports progress (the job's own scale). Safe from a plain function's thread."""
        try:
            in_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            in_loop = False
        if in_loop:
            self._set(int(value))
        else:
            self._loop.call_soon_threadsafe(self._set, int(value))

    def _set(self, value: int) -> None:
        self._progress = value
        self._changed.set()

    def checkpoint(self, value: Any) -> None:
        """Stores `value` (JSON: where the job has got to) with the next report: an attempt
        that runs the task again (a retry, or another worker's claim after this one's lease
        ran out) finds it as `checkpoint_value`. Safe from a plain function's thread; a
        value that is not JSON raises ValueError here."""
        try:
            text = jsontext.dumps(value, "The checkpoint")
        except TypeError as exc:
            raise ValueError(f"a checkpoint must be a JSON value: {exc}") from None
        self.checkpoint_value = orjson.loads(text)  # a copy: later changes are not sent
        encoded = orjson.Fragment(text)
        try:
            in_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            in_loop = False
        if in_loop:
            self._keep(encoded)
        else:
            self._loop.call_soon_threadsafe(self._keep, encoded)

    def _keep(self, encoded: orjson.Fragment) -> None:
        self._checkpoint = encoded
        self._changed.set()

    @property
    def cancel_requested(self) -> bool:
        """True once the service asked for this task to stop."""
        return self._cancel


class Worker:
    """Claims tasks of the types in `jobs` for the worker `name`, one at a time."""

    def __init__(
        self,
        url: str,
        name: str,
        jobs: Mapping[str, WorkerFunction],
        *,
        wait: float = 30.0,
        heartbeat: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not jobs:
            raise ValueError("a worker needs at least one job type")
        self.url = url.rstrip("/")
        self.name = name
        self.jobs = dict(jobs)
        self.wait = wait
        #: seconds between reports when progress does not change (default: a third of the lease)
        self.heartbeat = heartbeat
        self.headers = dict(headers or {})
        self._stopping = asyncio.Event()
        self._client: Client | None = None

    def stop(self) -> None:
        """Take no more tasks; the one running is finished first."""
        self._stopping.set()

    async def run(self, *, burst: bool = False) -> int:
        """Claims and runs tasks until `stop()`, or with `burst` until a claim finds none.
        Returns how many tasks it ran; raises `Refused` when the service refuses the worker
        (a 4xx other than 408 and 429: retrying cannot help)."""
        done = 0
        backoff = Backoff(FIRST_BACKOFF, MAX_BACKOFF)
        async with Client(self.url, timeout=REPORT_TIMEOUT, headers=self.headers) as client:
            self._client = client
            try:
                while not self._stopping.is_set():
                    try:
                        ran = await self.run_once()
                    except Refused as exc:
                        log.error("%s; stopping", exc)
                        raise
                    except (ConnectionFailed, Unavailable) as exc:
                        pause = backoff.next() or MAX_BACKOFF  # no budget: never None
                        log.warning("%s; trying again in %.1f s", exc, pause)
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(pause):
                                await self._stopping.wait()
                        continue
                    backoff.reset()
                    if ran:
                        done += 1
                    elif burst:
                        break
            finally:
                self._client = None
        return done

    async def run_once(self) -> bool:
        """Claims one task and runs it to its end; False when none came within `wait`."""
        claim = await self._claim()
        if claim is None:
            return False
        task = WorkerTask(claim, asyncio.get_running_loop())
        log.info("task %d (%s) claimed", task.id, task.type)
        await self._run(task)
        return True

    # --- the protocol ---

    def _http(self) -> Client:
        if self._client is None:
            raise RuntimeError("Worker.run_once is called from Worker.run")
        return self._client

    async def _claim(self) -> dict[str, Any] | None:
        request = asyncio.ensure_future(self._http().claim(self.name, self.jobs, wait=self.wait))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({request, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not request.done():  # stopped while waiting: the service gives the claim back
            request.cancel()
            with contextlib.suppress(asyncio.CancelledError, ClientError):
                await request
            return None
        try:
            return request.result()
        except APIError as exc:
            raise _unexpected("the claim", exc) from None

    async def _send(self, task: WorkerTask, report: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        """A report's answer; TaskLost when the lease no longer holds the task."""
        try:
            return await report
        except APIError as exc:
            if exc.status in (404, 409):
                raise TaskLost(exc.status, exc.message, exc.exception, exc.cause) from None
            raise _unexpected(f"a report on task {task.id}", exc) from None

    async def _report(self, task: WorkerTask) -> None:
        """Sends the latest progress (or a heartbeat); a requested cancel cancels the job."""
        checkpoint = task._checkpoint
        answer = await self._send(
            task, self._http().report(task.url, task.lease, task._progress, checkpoint)
        )
        if task._checkpoint is checkpoint:  # sent: a later one waits for the next report
            task._checkpoint = None
        if answer.get("cancel") and not task._cancel:
            log.info("task %d: cancel requested", task.id)
            task._cancel = True

    async def _run(self, task: WorkerTask) -> None:
        function = self.jobs[task.type]
        interruptible = inspect.iscoroutinefunction(function)
        if interruptible:
            job: asyncio.Future[Any] = asyncio.ensure_future(function(task))
        else:  # a thread cannot be interrupted: the function reads task.cancel_requested
            job = asyncio.ensure_future(asyncio.to_thread(function, task))
        lost = False
        try:
            lost = await self._watch(task, job, interruptible)
        finally:
            if not job.done():
                job.cancel()
            with contextlib.suppress(BaseException):
                await job
        if lost:
            log.warning("task %d: no longer ours; dropped", task.id)
            return
        await self._finish(task, job)

    async def _watch(self, task: WorkerTask, job: asyncio.Future[Any], interruptible: bool) -> bool:
        """Reports while the job runs: at once (the task starts running), when progress
        changes (at most every MIN_REPORT_INTERVAL), and as a heartbeat. Returns whether the
        task was lost."""
        heartbeat = self.heartbeat or max(MIN_REPORT_INTERVAL, task.lease_duration / 3)
        while True:
            try:
                await self._report(task)
            except TaskLost as exc:
                log.warning("task %d: %s", task.id, exc)
                return True
            except Unavailable as exc:
                log.warning("task %d: %s; trying again", task.id, exc)
            except ConnectionFailed as exc:
                log.warning("task %d: report failed, %s; trying again", task.id, exc)
            if task._cancel and interruptible and not job.done():
                job.cancel()
            changed = asyncio.ensure_future(task._changed.wait())
            try:
                await asyncio.wait(
                    {job, changed}, timeout=heartbeat, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                changed.cancel()
            if job.done():
                return False
            task._changed.clear()
            await asyncio.wait({job}, timeout=MIN_REPORT_INTERVAL)  # coalesce a burst of progress
            if job.done():
                return False

    async def _finish(self, task: WorkerTask, job: asyncio.Future[Any]) -> None:
        client = self._http()
        progress = task._progress
        completing = False
        end: Callable[[], Awaitable[dict[str, Any]]]
        if job.cancelled() or task._cancel:
            end = partial(
                client.fail, task.url, task.lease, "Cancelled on request", progress=progress
            )
        elif (failure := job.exception()) is not None:
            error = f"{type(failure).__name__}: {failure}"
            retry = not isinstance(failure, PermanentFailure)
            end = partial(
                client.fail,
                task.url,
                task.lease,
                error,
                retry=retry,
                progress=progress,
                checkpoint=task._checkpoint,  # one not sent yet goes with the end
            )
        else:
            try:
                # written here, sent as it is: inside {"result": …} a result nested as deep
                # as the service stores would be a level too deep for orjson to write again
                result = orjson.Fragment(jsontext.dumps(job.result(), "The job's result"))
            except jsontext.TooDeep as exc:
                end = partial(
                    client.fail, task.url, task.lease, str(exc), retry=False, progress=progress
                )
            except TypeError as exc:
                error = f"The job's result is not JSON-serialisable: {exc}"
                end = partial(client.fail, task.url, task.lease, error, retry=False)
            else:
                completing = True
                end = partial(client.complete, task.url, task.lease, result, progress=progress)
        # The end is worth a few tries: until the lease would run out.
        loop = asyncio.get_running_loop()
        backoff = Backoff(
            FIRST_END_RETRY, MAX_END_RETRY, budget=task.lease_duration, clock=loop.time
        )
        while True:
            try:
                answer = await self._send(task, end())
            except TaskLost as exc:
                log.warning("task %d: its end was not accepted: %s", task.id, exc)
                return
            except Refused as exc:
                if not completing or exc.status not in (400, 413):
                    raise
                # The result itself is refused (too large, nested too deeply): no retry of
                # the job makes it acceptable, so the task fails and says why.
                log.error("task %d: %s", task.id, exc)
                error = f"The service refused the job's result: {exc.message}"
                end = partial(
                    client.fail, task.url, task.lease, error, retry=False, progress=progress
                )
                completing = False
                continue
            except (ConnectionFailed, Unavailable) as exc:
                pause = backoff.next()
                if pause is None:
                    log.error("task %d: could not report its end: %s", task.id, exc)
                    return
                await asyncio.sleep(pause)
                continue
            log.info("task %d: %s", task.id, answer.get("task_status"))
            return


# --- the command line ---


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service.worker",
        description="Run Python functions as a sidetask external worker.",
    )
    parser.add_argument("--url", default=os.environ.get("SIDETASK_URL", "http://127.0.0.1:8080"))
    parser.add_argument(
        "--name", default=f"{socket.gethostname()}-{os.getpid()}", help="shown as task_server"
    )
    parser.add_argument(
        "--job", action="append", required=True, metavar="TYPE=MODULE:FUNCTION",
        help="an external job type and the function that runs it (repeat for more)",
    )  # fmt: skip
    parser.add_argument("--wait", type=float, default=30.0, help="seconds a claim waits for work")
    parser.add_argument("--burst", action="store_true", help="exit when a claim finds no work")
    parser.add_argument(
        "--header", action="append", default=[], metavar="NAME: VALUE",
        help="a header sent with every request, e.g. credentials (repeat for more)",
    )  # fmt: skip
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    jobs: dict[str, WorkerFunction] = {}
    for spec in args.job:
        type_name, sep, target = spec.partition("=")
        if not sep or not type_name:
            print(
                f"worker: --job {spec!r} is not of the form TYPE=MODULE:FUNCTION", file=sys.stderr
            )
            return 2
        try:
            jobs[type_name] = cast(WorkerFunction, load_function(target)[1])
        except ValueError as exc:
            print(f"worker: --job {type_name}: {exc}", file=sys.stderr)
            return 2
    headers: dict[str, str] = {}
    for header in args.header:
        key, sep, value = header.partition(":")
        if not sep or not key.strip():
            print(f"worker: --header {header!r} is not of the form 'Name: value'", file=sys.stderr)
            return 2
        headers[key.strip()] = value.strip()
    worker = Worker(args.url, args.name, jobs, wait=args.wait, headers=headers)

    async def serve() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, worker.stop)  # finish the task at hand, then exit
        return await worker.run(burst=args.burst)

    try:
        done = asyncio.run(serve())
    except Refused:  # run() logged the service's message
        return EXIT_REFUSED
    log.info("worker %s stopped after %d task(s)", args.name, done)
    return 0


if __name__ == "__main__":
    sys.exit(main())

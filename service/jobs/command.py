"""Command jobs: a declared argument list run as its own process group, its progress read
from its output, stopped with SIGTERM then SIGKILL, found again after a crash.

The command is the configuration's (`[commands.NAME]`); a task's input only fills the
declared `{placeholders}`, each checked against its declared type when the task is
submitted. Nothing goes through a shell: each placeholder becomes (part of) one argument.

The process is started in a new session, so its process group id is its pid and every
child it starts belongs to the same group: a cancel, a timeout or the end of the leader
stops the whole group. The group id is stored with the task before the job waits on it,
so a service that crashed can find the group at its next start and stop it
(`stop_orphan`) before the task is restored.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import CommandSpec, ConfigError
from .base import ChildError, JobContext, JobType, PermanentFailure, error_name

log = logging.getLogger("sidetask.jobs.command")

#: the task_callable of every command job
CALLABLE_PATH = "service.jobs.command.run"
#: the output kept in the result: the last 64 KiB of stdout and stderr, progress lines left out
TAIL_BYTES = 64 * 1024
#: a line of stdout that reports progress: `progress: N`, N an integer (the job's own
#: scale), or `progress: N/M`, N of a total M (at least 1; task_progress_total)
PROGRESS_LINE = re.compile(
    rb"progress:[ \t]*(-?[0-9]{1,18})(?:[ \t]*/[ \t]*([0-9]{1,18}))?[ \t]*\r?"
)
#: how often a stopping process group is looked at
STOP_POLL_SECONDS = 0.05
#: how long the output pipes may stay open after the whole group is gone (a process that
#: left the group with setsid may hold them)
PIPE_DRAIN_SECONDS = 1.0

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]")


class CommandFailed(RuntimeError):
    """The command exited with a code other than 0, or was killed (retries apply)."""

    #: what its attempt shows: the exit code or signal, and the tail of its stderr
    child_error: ChildError | None = None


class CommandTimedOut(RuntimeError):
    """The command ran longer than its declared timeout and was stopped (retries apply)."""

    child_error: ChildError | None = None


# --- templates ---


Template = tuple[str | tuple[str], ...]
"""A parsed argument: literal text, and ("name",) for each placeholder."""


def parse_template(where: str, text: str) -> Template:
    """`{name}` is a placeholder, `{{` and `}}` are literal braces; a lone brace is an error."""
    parts: list[str | tuple[str]] = []
    literal: list[str] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        literal.append(text[position : match.start()])
        position = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            literal.append(token[0])
        elif match.group(1) is not None:
            parts.append("".join(literal))
            literal = []
            parts.append((match.group(1),))
        else:
            raise ConfigError(
                f"{where}: {text!r} has a lone {token!r}; write {{name}} for a placeholder "
                "and {{ or }} for a literal brace"
            )
    literal.append(text[position:])
    parts.append("".join(literal))
    return tuple(p for p in parts if p != "")


def placeholders(template: Template) -> list[str]:
    return [part[0] for part in template if isinstance(part, tuple)]


def render(template: Template, values: Mapping[str, str]) -> str:
    return "".join(part if isinstance(part, str) else values[part[0]] for part in template)


def _argument(name: str, kind: str, value: Any) -> str:
    """A validated input value as the text of an argument; ValueError says what is wrong."""
    ok = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
    }[kind]
    if not ok:
        raise ValueError(
            f"The parameter '{name}' must be {'an' if kind == 'integer' else 'a'} {kind}, "
            f"but got {_json_kind(value)} {value!r}"
        )
    if kind == "boolean":
        return "true" if value else "false"
    if (
        kind == "number" and isinstance(value, float) and value != value
    ):  # NaN cannot come from JSON
        raise ValueError(f"The parameter '{name}' must be a finite number")
    text = str(value)
    if "\0" in text:
        raise ValueError(f"The parameter '{name}' must not contain a NUL character")
    return text


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# --- the command ---


@dataclass(frozen=True)
class Command:
    """A declared command, its templates parsed and checked against its parameters."""

    name: str
    spec: CommandSpec
    argv: tuple[Template, ...]
    env: Mapping[str, Template]
    #: the declared total: a number, or the name of the integer parameter that holds it
    total: int | str | None = None

    @classmethod
    def compile(cls, name: str, spec: CommandSpec) -> Command:
        where = f"commands.{name}"
        argv = tuple(parse_template(f"{where}.argv", a) for a in spec.argv)
        if any(isinstance(part, tuple) for part in argv[0]):
            raise ConfigError(
                f"{where}.argv: the program ({spec.argv[0]!r}) must be fixed, not a placeholder"
            )
        env = {k: parse_template(f"{where}.env.{k}", v) for k, v in spec.env.items()}
        used = {p for t in (*argv, *env.values()) for p in placeholders(t)}
        undeclared = sorted(used - set(spec.params))
        if undeclared:
            raise ConfigError(
                f"{where}: placeholder(s) {', '.join(undeclared)} not declared in params"
            )
        total: int | str | None = spec.total
        if isinstance(spec.total, str):
            template = parse_template(f"{where}.total", spec.total)
            if len(template) != 1 or not isinstance(template[0], tuple):
                raise ConfigError(
                    f"{where}.total: {spec.total!r} must be an integer or one placeholder, "
                    '"{name}", of an integer parameter'
                )
            total = template[0][0]
            if spec.params.get(total) != "integer":
                raise ConfigError(
                    f"{where}.total: {total!r} is not an integer parameter declared in params"
                )
        return cls(name, spec, argv, env, total)

    def arguments(self, job_input: Any) -> dict[str, str]:
        """The input as placeholder values; ValueError with a message for the submitter."""
        declared = self.spec.params
        if job_input is None:
            job_input = {}
        if not isinstance(job_input, dict):
            raise ValueError(f"The input of command job '{self.name}' must be a JSON object")
        missing = [p for p in declared if p not in job_input]
        if missing:
            raise ValueError(
                f"Command job '{self.name}' needs the parameter(s) {', '.join(missing)}; "
                f"declared: {self._declared()}"
            )
        unknown = sorted(set(job_input) - set(declared))
        if unknown:
            raise ValueError(
                f"Command job '{self.name}' has no parameter(s) {', '.join(unknown)}; "
                f"declared: {self._declared()}"
            )
        return {p: _argument(p, kind, job_input[p]) for p, kind in declared.items()}

    def _declared(self) -> str:
        return ", ".join(f"{p} ({kind})" for p, kind in self.spec.params.items()) or "none"

    def validate(self, job_input: Any) -> None:
        self.arguments(job_input)

    def render(self, job_input: Any) -> tuple[list[str], dict[str, str]]:
        values = self.arguments(job_input)
        argv = [render(t, values) for t in self.argv]
        env = {k: render(t, values) for k, t in self.env.items()}
        return argv, env

    def declared_total(self, job_input: Any) -> int | None:
        """The total this run's progress counts to, when the command declares one (a
        parameter's value below 1 declares none)."""
        if isinstance(self.total, str):
            value = int(self.arguments(job_input)[self.total])
            return value if 1 <= value < 2**63 else None
        return self.total


def job_type(name: str, spec: CommandSpec) -> JobType:
    command = Command.compile(name, spec)
    return JobType(name, CALLABLE_PATH, functools.partial(run, command), validate=command.validate)


# --- running ---


class _Output(asyncio.SubprocessProtocol):
    """Reads the command's stdout and stderr as they come: `progress: N` lines of stdout
    are reported, everything else is kept as a bounded tail. Knows when the process exited
    and when its pipes closed, separately (a child may hold the pipes after the leader exits)."""

    def __init__(
        self,
        report: Callable[[int, int | None], None],
        log: Callable[[str, str], None] = lambda text, level: None,
        line_limit: int = TAIL_BYTES,
        err_limit: int = 0,
    ) -> None:
        self._report = report
        #: the last `err_limit` bytes of stderr alone: a failed attempt's traceback
        self._err_limit = err_limit
        self.err_tail = bytearray()
        self.err_truncated = False
        #: each line of output (not progress) as it comes: stdout's as info, stderr's as
        #: warning (a line longer than `line_limit` bytes is logged in pieces)
        self._log = log
        self._line_limit = line_limit
        self._err_partial = bytearray()
        self.tail = bytearray()
        self.truncated = False
        self._partial = bytearray()
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.pipes_closed: asyncio.Future[None] = loop.create_future()
        self._open_pipes = {1, 2}

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd != 1:
            self._keep(data)
            if self._err_limit:
                self.err_tail += data
                if len(self.err_tail) > self._err_limit:
                    del self.err_tail[: len(self.err_tail) - self._err_limit]
                    self.err_truncated = True
            self._err_partial += data
            *lines, rest = self._err_partial.split(b"\n")
            self._err_partial = bytearray(rest)
            for line in lines:
                self._log_line(bytes(line), "warning")
            if len(self._err_partial) > self._line_limit:
                self._log_line(bytes(self._err_partial), "warning")
                self._err_partial.clear()
            return
        self._partial += data
        *lines, rest = self._partial.split(b"\n")
        self._partial = bytearray(rest)
        for line in lines:
            self._line(bytes(line), newline=True)
        if len(self._partial) > min(TAIL_BYTES, self._line_limit):
            # a line too long to be progress: keep it as output
            self._keep(bytes(self._partial))
            self._log_line(bytes(self._partial), "info")
            self._partial.clear()

    def _line(self, line: bytes, newline: bool) -> None:
        match = PROGRESS_LINE.fullmatch(line)
        total = None if match is None or match.group(2) is None else int(match.group(2))
        if match is not None and (total is None or 1 <= total < 2**63):
            self._report(int(match.group(1)), total)
        else:
            self._keep(line + b"\n" if newline else line)
            self._log_line(line, "info")

    def _log_line(self, line: bytes, level: str) -> None:
        self._log(line.rstrip(b"\r").decode(errors="replace"), level)

    def _keep(self, data: bytes) -> None:
        self.tail += data
        if len(self.tail) > TAIL_BYTES:
            del self.tail[: len(self.tail) - TAIL_BYTES]
            self.truncated = True

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1 and self._partial:
            self._line(bytes(self._partial), newline=False)
            self._partial.clear()
        if fd == 2 and self._err_partial:
            self._log_line(bytes(self._err_partial), "warning")
            self._err_partial.clear()
        self._open_pipes.discard(fd)
        if not self._open_pipes and not self.pipes_closed.done():
            self.pipes_closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def text(self) -> str:
        return self.tail.decode(errors="replace")

    def stderr_tail(self, limit: int) -> str | None:
        """The last `limit` characters of stderr, with a mark when more came before them;
        None when it wrote nothing there (or no traceback is kept: limit 0)."""
        if not limit or not self.err_tail:
            return None
        text = self.err_tail.decode(errors="replace")
        cut = self.err_truncated or len(text) > limit
        text = text[-limit:]
        if not cut:
            return text
        mark = "…(earlier stderr cut)…\n"
        return mark + text[len(mark) :] if len(text) + len(mark) > limit else mark + text


async def run(command: Command, ctx: JobContext) -> dict[str, Any]:
    """Runs the command to its end. Returns {"exit_code": 0, "output": …, "output_truncated": …};
    any other exit raises CommandFailed (retries apply). A cancel (the API's, a task timeout,
    a drain) stops the process group before the cancel goes on."""
    spec = command.spec
    try:
        argv, extra_env = command.render(ctx.input)
    except ValueError as exc:  # checked at submit; only an input stored under an older config
        raise PermanentFailure(str(exc)) from None
    env = {**os.environ, **extra_env, "SIDETASK_TASK_ID": str(ctx.task_id)}
    if ctx.traceparent is not None:  # the environment carrier of OpenTelemetry's tools
        env["TRACEPARENT"] = ctx.traceparent
        if ctx.tracestate is not None:
            env["TRACESTATE"] = ctx.tracestate
    total = command.declared_total(ctx.input)
    if total is not None:
        ctx.progress(0, total)
    grace = ctx.settings.kill_grace
    loop = asyncio.get_running_loop()
    try:
        transport, output = await loop.subprocess_exec(
            lambda: _Output(
                ctx.progress,
                ctx.log,
                ctx.settings.max_log_line_chars,
                # bytes: a character of UTF-8 takes up to four
                err_limit=4 * ctx.settings.max_traceback_chars,
            ),
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=spec.cwd,
            env=env,
            start_new_session=True,  # its own process group: pgid == pid
        )
    except OSError as exc:
        raise CommandFailed(f"Command '{command.name}' could not start: {exc}") from None
    group = transport.get_pid()
    try:
        async with held_group(ctx, group, grace):
            timed_out = False
            try:
                async with asyncio.timeout(spec.timeout):
                    await output.exited
            except TimeoutError:
                timed_out = True
        await drained(output.pipes_closed)
    finally:
        transport.close()
    code = transport.get_returncode()
    tail = output.text()
    stderr = output.stderr_tail(ctx.settings.max_traceback_chars)
    if timed_out:
        what = f"Command '{command.name}' timed out after {spec.timeout:g} s and was stopped"
        timeout_error = CommandTimedOut(what + _tail_note(tail, output.truncated))
        timeout_error.child_error = ChildError(error_name(timeout_error), what, stderr)
        raise timeout_error
    if code != 0:
        # the task's result keeps its text (the output's tail); the attempt says how it
        # ended (exit code or signal) and holds the tail of stderr, where a program says why
        what = f"Command '{command.name}' {_exit_text(code)}"
        failure = CommandFailed(what + _tail_note(tail, output.truncated))
        failure.child_error = ChildError(error_name(failure), what, stderr)
        raise failure
    return {"exit_code": 0, "output": tail, "output_truncated": output.truncated}


@contextlib.asynccontextmanager
async def held_group(ctx: JobContext, group: int, grace: float) -> AsyncIterator[None]:
    """The life of a job's process group around the wait for its leader. The group is
    recorded with the task before the job waits on it, so a crash from here on leaves a
    group the next start can find and stop (a crash in the instant before this write
    leaves one it cannot). When the leader is gone, whatever is left of its group goes
    with it; when the wait is cancelled (the API, a task timeout, a drain) or the store
    fails, the group is stopped before the error goes on. The record is cleared once the
    group is gone."""
    try:
        await asyncio.shield(ctx.record_process_group(group, process_token(group)))
        yield
        await asyncio.shield(stop_group(group, grace))
    except BaseException:
        # Shielded: a second cancel (a drain after a cancel) must not interrupt the stop.
        stopping = asyncio.ensure_future(stop_group(group, grace))
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(stopping)
        raise
    finally:
        if not group_alive(group):
            with contextlib.suppress(Exception):
                await asyncio.shield(ctx.record_process_group(None, None))


async def drained(closed: asyncio.Future[None]) -> None:
    """Waits a moment for the pipes of a stopped group to close, so the last output is read."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(PIPE_DRAIN_SECONDS):
            await asyncio.shield(closed)


def _exit_text(code: int | None) -> str:
    if code is None:
        return "ended without an exit code"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


def _tail_note(tail: str, truncated: bool) -> str:
    if not tail:
        return "; it wrote no output"
    return f"; {'the last 64 KiB of ' if truncated else ''}its output:\n{tail}"


# --- process groups ---


def _signal(group: int, sig: signal.Signals) -> bool:
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # not ours (any more): leave it alone
        log.warning("process group %d: no permission to send %s", group, sig.name)
        return False
    return True


async def stop_group(group: int, grace: float) -> None:
    """SIGTERM to the group; SIGKILL to what is left of it after `grace` seconds."""
    if not group_alive(group) or not _signal(group, signal.SIGTERM):
        return
    deadline = asyncio.get_running_loop().time() + grace
    while group_alive(group):
        if asyncio.get_running_loop().time() >= deadline:
            log.info("process group %d outlived SIGTERM by %.1f s: SIGKILL", group, grace)
            _signal(group, signal.SIGKILL)
            return
        await asyncio.sleep(STOP_POLL_SECONDS)


_PROC = Path("/proc")


def _stat(pid: str | int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name: [state, ppid, pgrp, …]."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def group_alive(group: int) -> bool:
    """Whether any process of the group is still alive (zombies do not count: a process
    whose parent died may wait unreaped for a while)."""
    if sys.platform.startswith("linux") and _PROC.is_dir():
        try:
            entries = os.listdir(_PROC)
        except OSError:
            entries = []
        for entry in entries:
            if entry.isdigit():
                fields = _stat(entry)
                if fields and fields[2] == str(group) and fields[0] not in ("Z", "X"):
                    return True
        return False
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _boot_id() -> str | None:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def process_token(pid: int) -> str | None:
    """What tells this process apart from a later one with the same pid: the boot and the
    process's start time (Linux). None where that cannot be known."""
    boot = _boot_id()
    fields = _stat(pid)
    if boot is None or fields is None or len(fields) < 20:
        return None
    return f"{boot}:{fields[19]}"


async def stop_orphan(group: int, token: str | None, grace: float) -> bool:
    """Stops a process group a previous run of the service left behind, unless it is
    certainly not that group any more: the machine rebooted, or its leader's pid now belongs
    to a process started later. (While a group has members its id is not reused.) Returns
    whether anything was stopped."""
    if token is not None:
        boot, _, started = token.rpartition(":")
        if _boot_id() not in (None, boot):
            return False  # rebooted: that group is long gone
        leader = _stat(group)
        if leader is not None and len(leader) >= 20 and leader[19] != started:
            return False  # the pid was reused by an unrelated process
    if not group_alive(group):
        return False
    log.warning("stopping process group %d left by a previous run", group)
    await stop_group(group, grace)
    return True

"""The `sidetask` command, run for real (`python -m service …` in a subprocess) against a real
server on loopback: what a person reads, what a script parses, and the exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestServer

from service.client import Client
from tests.conftest import ROOT, free_port, wait_for
from tests.proxy import Proxy

STEP = 20.0
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def interruptible() -> None:
    """In a command's child process before it runs: Ctrl-C (SIGINT) acts, whatever the
    test run inherited (a run started in the background by a shell without job control
    ignores SIGINT, and a child inherits that; Python then never turns it into
    KeyboardInterrupt, and a watch could not be ended the way its user ends it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def command_env(**extra: str) -> dict[str, str]:
    """The environment of a command: none of the caller's SIDETASK_* or COLUMNS settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDETASK_") and k != "COLUMNS"}
    env.update(extra)
    return env


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return orjson.loads(self.out)


async def sidetask(
    *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> Ran:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", *args,
        cwd=ROOT,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=command_env(**(env or {})),
    )  # fmt: skip
    try:
        async with asyncio.timeout(STEP):
            out, err = await proc.communicate(stdin)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


@pytest.fixture
def url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def api(url: str) -> AsyncIterator[Client]:
    async with Client(url) as api:
        yield api


async def wait_task(api: Client, task_id: int, *statuses: str) -> Any:
    async def probe() -> Any:
        task = await api.get(task_id)
        return task if task.status in statuses else None

    return await wait_for(probe, STEP, f"task {task_id} to reach {statuses}")


def submitted_id(ran: Ran) -> int:
    match = re.search(r"Submitted task (\d+)", ran.out)
    assert match, ran.out + ran.err
    return int(match.group(1))


async def test_submit_then_ls_and_get_as_tables_and_json(url: str, api: Client) -> None:
    ran = await sidetask("submit", "echo", "--input", '{"hello": "world"}', "--url", url)
    assert ran.code == 0, ran.err
    assert "(echo) to DEFAULT/hugegraph" in ran.out
    task_id = submitted_id(ran)
    await wait_task(api, task_id, "success")

    table = await sidetask("ls", "--url", url)
    assert table.code == 0, table.err
    header = next(line for line in table.out.splitlines() if "STATUS" in line)
    assert header.split() == [
        "ID",
        "STATUS",
        "TYPE",
        "NAME",
        "PROGRESS",
        "RETRIES",
        "CREATED",
        "UPDATED",
    ]
    row = next(line for line in table.out.splitlines() if line.split()[:1] == [str(task_id)])
    assert row.split()[1:4] == ["success", "echo", "echo"]

    listed = await sidetask("--url", url, "ls", "--json")  # options before the command work too
    assert [t["id"] for t in listed.json()] == [task_id]

    detail = await sidetask("get", str(task_id), "--url", url)
    assert detail.code == 0
    assert re.search(r"task_result\s+\{\"hello\":\"world\"\}", detail.out), detail.out
    assert re.search(r"task_status\s+success", detail.out)

    raw = await sidetask("get", str(task_id), "--url", url, "--json")
    assert raw.json() == (await api.get(task_id)).raw

    empty = await sidetask("ls", "--status", "failed", "--url", url)
    assert empty.code == 0 and "No tasks in status failed in DEFAULT/hugegraph." in empty.out


async def test_ls_shows_the_newest_first_and_filters_by_type(url: str, api: Client) -> None:
    """Past the default 100, the newest tasks are the ones shown; --oldest-first (or
    --order asc) gives the API's order, and --json holds the rows in the order shown."""
    echoes = [await api.submit("echo", {}, delay=3600) for _ in range(101)]
    sleeper = await api.submit("sleep", {"seconds": 0}, delay=3600)

    def ids(ran: Ran) -> list[int]:
        assert ran.code == 0, ran.err
        firsts = [line.split()[0] for line in ran.out.splitlines() if line.strip()]
        return [int(first) for first in firsts if first.isdigit()]

    newest = ids(await sidetask("ls", "--url", url))
    assert newest == [sleeper, *echoes[::-1]][:100]
    listed = await sidetask("ls", "--json", "--url", url, "--limit", "3")
    assert [t["id"] for t in listed.json()] == [sleeper, echoes[-1], echoes[-2]]
    oldest = await sidetask("ls", "--oldest-first", "--json", "--url", url, "--limit", "3")
    assert [t["id"] for t in oldest.json()] == echoes[:3]
    ascending = await sidetask("ls", "--order", "asc", "--json", "--url", url, "--limit", "2")
    assert [t["id"] for t in ascending.json()] == echoes[:2]

    of_type = await sidetask("ls", "--type", "sleep", "--json", "--url", url)
    assert [t["id"] for t in of_type.json()] == [sleeper]
    none = await sidetask("ls", "--type", "fail", "--url", url)
    assert none.code == 0 and "No tasks of type fail in DEFAULT/hugegraph." in none.out
    unknown = await sidetask("ls", "--type", "nosuch", "--url", url)
    assert unknown.code != 0 and "Invalid type 'nosuch', valid types are:" in unknown.err
    both = await sidetask("ls", "--oldest-first", "--order", "desc", "--url", url)
    assert both.code == 2 and "not allowed with" in both.err


async def test_submit_options_reach_the_task(url: str, api: Client, tmp_path: Path) -> None:
    input_file = tmp_path / "input.json"
    input_file.write_text('{"steps": 1, "interval": 0.01}')
    ran = await sidetask(
        "submit", "sleep", "--input-file", str(input_file), "--name", "nightly", "--priority", "7",
        "--max-retries", "2", "--timeout", "30", "--delay", "3600", "--url", url, "--json",
    )  # fmt: skip
    assert ran.code == 0, ran.err
    task = await api.get(ran.json()["task_id"])
    assert task.name == "nightly" and task.status == "new"  # the delay holds it back
    assert (task.raw["task_priority"], task.raw["task_max_retries"], task.raw["task_timeout"]) == (
        7,
        2,
        30.0,
    )
    assert task.input_value() == {"steps": 1, "interval": 0.01}

    from_stdin = await sidetask(
        "submit", "echo", "--input-file", "-", "--url", url, "--json", stdin=b'{"a": 1}'
    )
    assert (await api.get(from_stdin.json()["task_id"])).input_value() == {"a": 1}
    bad_stdin = await sidetask("submit", "echo", "--input-file", "-", "--url", url, stdin=b"{")
    assert bad_stdin.code == 2
    assert "sidetask: error: the standard input is not valid JSON" in bad_stdin.err, bad_stdin.err

    first = await sidetask("submit", "echo", "--idempotency-key", "k-1", "--url", url, "--json")
    again = await sidetask("submit", "echo", "--idempotency-key", "k-1", "--url", url, "--json")
    assert first.json() == again.json()


async def test_watch_exit_codes_success_failed_cancelled(url: str, api: Client) -> None:
    done = await sidetask(
        "submit", "sleep", "--input", '{"steps": 3, "interval": 0.02}', "--watch", "--url", url
    )
    assert done.code == 0, done.err
    assert "progress 3/3" in done.out
    assert re.search(r"Task \d+ success: 3", done.out)

    failed = await sidetask(
        "submit", "fail", "--input", '{"message": "disk on fire"}', "--watch", "--url", url
    )
    assert failed.code == 1
    assert re.search(r"Task \d+ failed: .*disk on fire", failed.out)

    long = await api.submit("sleep", {"steps": 1000, "interval": 0.05})
    await wait_task(api, long, "running")
    cancel = await sidetask("cancel", str(long), "--url", url)
    assert cancel.code == 0 and re.search(
        rf"Task {long} is now (cancelling|cancelled)\.", cancel.out
    )
    watched = await sidetask("watch", str(long), "--url", url)
    assert watched.code == 2
    assert f"Task {long} cancelled." in watched.out


async def test_pause_resume_retry_delete(url: str, api: Client) -> None:
    task_id = await api.submit("echo", {}, delay=3600)
    paused = await sidetask("pause", str(task_id), "--url", url)
    assert paused.code == 0 and f"Task {task_id} is now pending." in paused.out

    refused = await sidetask("delete", str(task_id), "--url", url)
    assert refused.code == 3
    assert (
        f"Can't delete incomplete task '{task_id}' in status PENDING, Please try to cancel the task first"
        in refused.err
    )
    resumed = await sidetask("resume", str(task_id), "--url", url, "--json")
    assert resumed.code == 0 and resumed.json()["id"] == task_id
    assert resumed.json()["task_status"] != "pending"
    await wait_task(api, task_id, "success")

    failing = await api.submit("fail", {"message": "again"})
    await wait_task(api, failing, "failed")
    retried = await sidetask("retry", str(failing), "--url", url)
    assert retried.code == 0 and f"Task {failing} is now restoring." in retried.out

    deleted = await sidetask("delete", str(task_id), "--url", url)
    assert deleted.code == 0 and f"Deleted task {task_id}." in deleted.out
    forced = await sidetask(
        "delete", str(await api.submit("echo", {}, delay=3600)), "--force", "--url", url
    )
    assert forced.code == 0
    gone = await sidetask("get", str(task_id), "--url", url)
    assert gone.code == 3 and f"Can't find task with id '{task_id}'" in gone.err


async def test_a_refused_action_prints_the_status_it_found(url: str, api: Client) -> None:
    task_id = await api.submit("echo", {})
    async with asyncio.timeout(10):
        async for event in api.events(task_id):
            if event.ends_task_stream:
                break
    refused = await sidetask("cancel", str(task_id), "--url", url)
    assert refused.code == 3 and refused.out == ""
    assert refused.err == (
        f"sidetask: Can't cancel task '{task_id}' which is completed or cancelling; "
        f"Task '{task_id}' is in status SUCCESS (HTTP 400 IllegalArgumentException)\n"
    )


async def test_errors_print_the_servers_message_and_exit_non_zero(url: str) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    (
        missing,
        no_graph,
        bad_status,
        bad_type,
        unreachable,
        bad_json,
        both,
        bad_id,
        too_deep,
        beyond_parser,
    ) = await asyncio.gather(
        sidetask("get", "999", "--url", url),
        sidetask("ls", "--graph", "nosuch", "--url", url),
        sidetask("ls", "--status", "sleeping", "--url", url),
        sidetask("submit", "nope", "--url", url),
        sidetask("ls", "--url", nobody),
        sidetask("submit", "echo", "--input", "{nope", "--url", url),
        sidetask("submit", "echo", "--input", "{}", "--input-file", "x.json", "--url", url),
        sidetask("get", "abc", "--url", url),
        sidetask("submit", "echo", "--input", "[" * 255 + "]" * 255, "--url", url),
        sidetask("submit", "echo", "--input", "[" * 2000 + "]" * 2000, "--url", url),
    )
    assert missing.code == 3 and missing.out == ""
    assert "Can't find task with id '999' (HTTP 404 NotFoundException)" in missing.err
    assert no_graph.code == 3 and "Graph 'nosuch' does not exist" in no_graph.err
    assert bad_status.code == 3
    assert "Invalid status 'sleeping', valid statuses are: UNKNOWN, NEW," in bad_status.err
    assert bad_type.code == 3 and "Job type 'nope' is not registered" in bad_type.err
    # what happened, in words: none of aiohttp's "ssl:default [Connect call failed (…)]"
    assert unreachable.code == 4
    assert unreachable.err == f"sidetask: cannot reach {nobody}: connection refused\n"
    assert bad_json.code == 2 and "--input is not valid JSON" in bad_json.err
    assert both.code == 2 and "not allowed with argument" in both.err
    assert bad_id.code == 2 and "a task id is a positive integer" in bad_id.err
    for deep in (too_deep, beyond_parser):  # the service's bound and words, before sending
        assert deep.code == 2, deep.err
        assert "--input is nested too deeply; at most 254 levels are allowed" in deep.err


async def test_url_and_graph_from_options_and_the_environment(url: str, api: Client) -> None:
    other = await sidetask(
        "submit", "echo", "--graph", "gs1/other", "--json", env={"SIDETASK_URL": url}
    )
    assert other.code == 0, other.err
    other_id = other.json()["task_id"]
    in_other, in_default, wrong_env = await asyncio.gather(
        sidetask("ls", "--json", env={"SIDETASK_URL": url, "SIDETASK_GRAPH": "gs1/other"}),
        # `hugegraph` alone is graphspace DEFAULT, where that task is not
        sidetask("ls", "--json", "--graph", "hugegraph", env={"SIDETASK_URL": url}),
        # an option wins over the environment
        sidetask("ls", "--json", "--url", url, env={"SIDETASK_URL": "http://127.0.0.1:1"}),
    )
    assert [t["id"] for t in in_other.json()] == [other_id]
    assert in_default.json() == []
    assert wrong_env.code == 0 and wrong_env.json() == []


async def test_credentials_from_options_and_the_environment(server: TestServer) -> None:
    proxy = Proxy(server.port or 0)
    await proxy.start()
    try:
        basic = await sidetask("ls", "--url", proxy.url, "--user", "ada", "--password", "s3cret")
        bearer = await sidetask("ls", env={"SIDETASK_URL": proxy.url, "SIDETASK_TOKEN": "tok-9"})
        assert basic.code == 0 and bearer.code == 0
        assert proxy.requests_with(b"Authorization: Basic YWRhOnMzY3JldA==")
        assert proxy.requests_with(b"Authorization: Bearer tok-9")
    finally:
        await proxy.close()


async def test_watch_resumes_after_a_dropped_connection(server: TestServer, api: Client) -> None:
    proxy = Proxy(server.port or 0)
    await proxy.start()
    task_id = await api.submit("sleep", {"steps": 10, "interval": 0.2})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "watch", str(task_id), "--json", "--url", proxy.url,
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=command_env(),
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(STEP):
            while line := await proc.stdout.readline():
                lines.append(orjson.loads(line))
                if lines[-1]["event"] == "task.progress" and len(proxy.sent) == 1:
                    proxy.cut()
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await proxy.close()
    assert code == 0
    assert len(proxy.requests_with(b"Last-Event-ID:")) == 1
    ids = [line["id"] for line in lines]
    assert ids == sorted(set(ids)), "an event was repeated or out of order"
    assert lines[-1]["data"]["task_status"] == "success"
    progress = [line["data"]["task_progress"] for line in lines]
    assert progress[-1] == 10


async def test_watch_a_graph_as_json_lines(url: str, api: Client) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "watch", "--json", "--type", "echo", "--url", url,
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=command_env(),
        preexec_fn=interruptible,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    try:
        async with asyncio.timeout(STEP):
            notice = await proc.stderr.readline()
            assert b"Watching the echo tasks of DEFAULT/hugegraph" in notice
            await api.submit("sleep", {"steps": 1, "interval": 0.01})  # filtered out
            echo = await api.submit("echo", {"n": 1})
            seen = []
            while line := await proc.stdout.readline():
                event = orjson.loads(line)
                seen.append(event)
                if event["data"].get("task_status") == "success":
                    break
            proc.send_signal(signal.SIGINT)
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0  # Ctrl-C is how a graph's watch ends
    assert {e["data"]["id"] for e in seen} == {echo}
    assert seen[0]["event"] == "task.created" and seen[-1]["data"]["task_status"] == "success"


class Terminal:
    """A command on a pseudo-terminal (120 columns), so rich draws its live displays."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", *args],
            cwd=ROOT, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
            env=command_env(TERM="xterm-256color", **env), preexec_fn=interruptible,
        )  # fmt: skip
        os.close(slave)
        self._master = master
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._master, 65536)
            except OSError:  # EIO: the command and every holder of the terminal are gone
                return
            if not data:
                return
            self._chunks.append(data)

    @property
    def screen(self) -> str:
        """Everything written so far, without colours and cursor movements."""
        return ANSI.sub("", b"".join(self._chunks).decode(errors="replace"))

    async def shows(self, test: Callable[[str], Any], what: str) -> None:
        async def probe() -> bool:
            if self.proc.poll() is not None and not test(self.screen):
                raise AssertionError(
                    f"exited {self.proc.returncode} before showing {what}: {self.screen}"
                )
            return bool(test(self.screen))

        await wait_for(probe, STEP, what)

    async def exit_code(self) -> int:
        async def probe() -> bool:
            return self.proc.poll() is not None

        await wait_for(probe, STEP, "the command to exit")
        return int(self.proc.returncode)

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(10)
        os.close(self._master)


async def test_watch_draws_a_progress_bar_on_a_terminal(
    server_factory: Any, tmp_path: Path
) -> None:
    served = server_factory(tmp_path / "served.db")  # the real `sidetask serve`, end to end
    await served.wait_ready()
    async with Client(served.url) as api:
        task_id = await api.submit("sleep", {"steps": 4, "interval": 0.05}, name="four steps")
    terminal = Terminal("watch", str(task_id), env={"SIDETASK_URL": served.url})
    try:
        assert await terminal.exit_code() == 0
        screen = terminal.screen
        assert f"task {task_id} four steps" in screen
        assert "━" in screen  # the bar
        assert "4/4" in screen
        assert f"Task {task_id} success: 4" in screen
    finally:
        terminal.close()


async def test_watch_a_graph_as_a_live_table_on_a_terminal(url: str, api: Client) -> None:
    waiting = await api.submit("echo", {}, delay=3600)  # not completed: in the first table
    terminal = Terminal("watch", "--url", url, env={})
    try:
        await terminal.shows(lambda s: "DEFAULT/hugegraph: 1 task(s), live" in s, "the table")
        # a delayed task shows when it is due, in its own column
        due = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
        assert re.search(r"\bDUE\b", terminal.screen)
        assert re.search(rf"\b{waiting}\s+new\s+{due}\s+echo", terminal.screen)
        fresh = await api.submit("sleep", {"steps": 2, "interval": 0.01})
        await terminal.shows(
            lambda s: re.search(rf"\b{fresh}\s+success\s+sleep", s), "the new task's success"
        )
        terminal.proc.send_signal(signal.SIGINT)
        assert await terminal.exit_code() == 0
    finally:
        terminal.close()

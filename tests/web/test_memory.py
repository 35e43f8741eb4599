"""Memory a client can pin: readers that ask for a lot and never read hold a bounded amount.

A real `sidetask serve` with 20 tasks of 2 MiB input and 2 MiB result (echo returns its
input). Four raw connections open `/events` with `Last-Event-ID: 0` (a replay of every
stored event) and two ask for the whole list (`limit=-1`), and none reads a byte. The
server's peak RSS while they hang (the kernel's VmHWM, reset once the tasks are stored)
stays within a bound, `/health` answers meanwhile, and once they go it carries on.

The bound, per reader: a replay holds one page of stored events (at most
`sse_buffer_bytes`, or one event when that is larger), the event being written and the
socket's buffer (at most `sse_buffer_bytes` and a piece); a list holds one batch of small
tasks or one large task, a copy or two of it as JSON, and the socket's buffer. Each is
below 4 x (the largest event or task as JSON, 4 MiB here), so 16 MiB a reader; 64 MiB on
top for the allocator's slack and what serving the test itself costs. Without the bounds
one replaying reader held the whole log (about 280 MB here) two or three times over.
"""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.conftest import ServerProcess, wait_for
from tests.sse import SSEReader, stalled

MIB = 1024 * 1024
TASKS = 20
BLOB = 2 * MIB
SSE_READERS = 4
LIST_READERS = 2
#: what one reader may pin, and the slack over the base (see the module's docstring)
PER_READER = 16 * MIB
MARGIN = 64 * MIB
BASE = "/graphs/hugegraph"


def status_kib(pid: int, field: str) -> int:
    """A line of /proc/PID/status in bytes (VmRSS: now; VmHWM: the peak since the reset)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def reset_peak(pid: int) -> None:
    """Resets the process's VmHWM to its current RSS (Linux: clear_refs, value 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


async def test_readers_that_never_read_pin_a_bounded_amount(
    server_factory: Any, http: aiohttp.ClientSession, capsys: Any
) -> None:
    # a stalled replay is cut after a second; a stalled live stream at the next keep-alive
    server: ServerProcess = server_factory(
        env={"SIDETASK_SSE_STALL_SECONDS": "1", "SIDETASK_SSE_KEEPALIVE": "1"}
    )
    await server.wait_ready()
    url = server.url
    ids = []
    for n in range(TASKS):
        body = io.BytesIO(orjson.dumps({"n": n, "blob": "x" * BLOB}))
        async with http.post(f"{url}{BASE}/jobs/echo", data=body) as response:
            assert response.status == 201, await response.text()
            ids.append((await response.json())["task_id"])

    async def all_done() -> bool:
        async with http.get(f"{url}{BASE}/tasks/counts") as response:
            return bool((await response.json())["counts"]["success"] == TASKS)

    await wait_for(all_done, 60, "the large tasks to succeed")
    pid = server.proc.pid
    base = status_kib(pid, "VmRSS")
    reset_peak(pid)

    writers = [
        await stalled(server.port, "/events", "Last-Event-ID: 0\r\n") for _ in range(SSE_READERS)
    ]
    writers += [await stalled(server.port, f"{BASE}/tasks?limit=-1") for _ in range(LIST_READERS)]
    try:
        started = time.monotonic()
        async with asyncio.timeout(10), http.get(f"{url}/health") as response:
            assert response.status == 200
        health_ms = (time.monotonic() - started) * 1000

        def cut() -> int:
            return server.output().count("fell behind")

        async def all_cut() -> bool:
            return cut() >= SSE_READERS

        # every replaying reader has written as much as it could and was cut for it
        await wait_for(all_cut, 60, "the stalled event streams to be cut")
        started = time.monotonic()
        async with asyncio.timeout(10), http.get(f"{url}/health") as response:
            assert response.status == 200  # the list readers still hang
        health_ms = max(health_ms, (time.monotonic() - started) * 1000)
        peak = status_kib(pid, "VmHWM")
    finally:
        for writer in writers:
            writer.close()

    readers = SSE_READERS + LIST_READERS
    bound = base + readers * PER_READER + MARGIN
    with capsys.disabled():
        print(
            f"\nRSS: base {base / MIB:.0f} MiB, peak with {readers} stalled readers "
            f"{peak / MIB:.0f} MiB (bound {bound / MIB:.0f} MiB); /health took {health_ms:.0f} ms"
        )
    assert peak <= bound, f"peak RSS {peak / MIB:.0f} MiB over the bound {bound / MIB:.0f} MiB"

    # once they are gone the server carries on: a new task, its events, the whole list
    async with http.get(f"{url}{BASE}/events") as stream:
        reader = SSEReader(stream)
        async with http.post(f"{url}{BASE}/jobs/echo", json={"after": True}) as response:
            later = (await response.json())["task_id"]
        await reader.until(
            lambda e: e.json.get("id") == later and e.json.get("task_status") == "success"
        )
    async with (
        asyncio.timeout(60),
        http.get(f"{url}{BASE}/tasks", params={"limit": "-1"}) as response,
    ):
        tasks = orjson.loads(await response.read())["tasks"]
    assert [t["id"] for t in tasks] == [*ids, later]
    assert all(len(t["task_result"]) > BLOB for t in tasks[:TASKS])
    after = status_kib(pid, "VmRSS")
    with capsys.disabled():
        print(f"RSS after the readers left: {after / MIB:.0f} MiB")
    assert after <= bound

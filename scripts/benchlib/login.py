"""A correct login while wrong passwords flood the service.

One user with the shipped 600,000 PBKDF2 iterations. A fresh login is a GET /graphs on a new
connection with a header the server has not seen before — the credentials are padded with a
different number of spaces each time, so each one misses the cache of verified headers and
pays a full check — each from an address of its own that is not flooding (the first login
of a new client). Its latency (connect to answer) is measured:

- with no other load;
- while `flood` keep-alive connections from one address (127.0.0.2) send wrong passwords
  back to back (the throttle refuses that address with 429 after a few failures);
- while as many connections from as many addresses (127.0.0.2, 127.0.0.3, …) do the same
  (each address gets its few failures in: the checks' queue stays full and answers 503).

The flood starts `warmup` seconds before the first measured login. Every request is bounded.
Also runnable alone against a server started by hand (`--url`, `--user`, `--password`):

    PYTHONPATH=scripts .venv/bin/python -m benchlib.login --url http://127.0.0.1:8080 \\
        --user bench --password … [--logins 10] [--flood 60]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import multiprocessing
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import aiohttp

from . import cpu
from .server import BenchServer, run_loop
from .stats import percentile

USER = "bench"
PASSWORD = "correct horse battery staple"
PATH = "/graphs"
#: no request of the benchmark waits longer than this
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=120)


def header(user: str, password: str, padding: int = 0) -> str:
    credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
    return "Basic " + " " * padding + credentials


class Flood:
    """`connections` loops, each on its own keep-alive connection from one of `addresses`,
    sending wrong passwords as fast as they are answered; statuses counted."""

    def __init__(self, url: str, user: str, connections: int, addresses: list[str]) -> None:
        self.url = url
        self.user = user
        self.connections = connections
        self.addresses = addresses
        self.statuses: Counter[str] = Counter()
        self.sent = 0

    async def _loop(self, session: aiohttp.ClientSession, index: int) -> None:
        attempt = 0
        while True:
            attempt += 1
            wrong = header(self.user, f"wrong-{index}-{attempt}")
            try:
                async with session.get(
                    self.url + PATH, headers={"Authorization": wrong}
                ) as response:
                    await response.read()
                    self.statuses[str(response.status)] += 1
            except (TimeoutError, aiohttp.ClientError) as exc:
                self.statuses[type(exc).__name__] += 1
                await asyncio.sleep(0.01)
            self.sent += 1

    async def run(self, stop: Any) -> None:
        """Floods until `stop` (a multiprocessing Event) is set."""
        sessions = [
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, local_addr=(address, 0)),
                timeout=REQUEST_TIMEOUT,
            )
            for address in self.addresses
        ]
        tasks = [
            asyncio.create_task(self._loop(sessions[i % len(sessions)], i))
            for i in range(self.connections)
        ]
        try:
            # the stop comes from another process: looked at every 50 ms
            while not stop.is_set():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for session in sessions:
                await session.close()


def _flood_process(
    url: str, user: str, connections: int, addresses: list[str], stop: Any, results: Any
) -> None:
    flood = Flood(url, user, connections, addresses)
    run_loop(flood.run(stop))
    results.put({"flood_statuses": dict(flood.statuses), "flood_requests": flood.sent})


@contextlib.contextmanager
def flooding(
    url: str, user: str, connections: int, addresses: list[str]
) -> Iterator[dict[str, Any]]:
    """The flood in a process of its own, so that it does not delay the measuring client's
    loop; its counts are in the dict yielded once the block has ended."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    results = context.Queue()
    process = context.Process(
        target=_flood_process, args=(url, user, connections, addresses, stop, results), daemon=True
    )
    process.start()
    counts: dict[str, Any] = {}
    try:
        yield counts
    finally:
        stop.set()
        try:
            counts.update(results.get(timeout=60))
        finally:
            process.join(30)
            if process.is_alive():
                process.kill()
                process.join()


async def fresh_logins(
    url: str, user: str, password: str, count: int, first_padding: int, network: str
) -> dict[str, Any]:
    """`count` fresh correct logins one after another, each on a new connection from an
    address of its own (`network` + "1", + "2", …): each the first login of a new client."""
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    for i in range(count):
        connector = aiohttp.TCPConnector(force_close=True, local_addr=(f"{network}{i + 1}", 0))
        async with aiohttp.ClientSession(connector=connector, timeout=REQUEST_TIMEOUT) as session:
            begun = time.perf_counter()
            try:
                async with session.get(
                    url + PATH, headers={"Authorization": header(user, password, first_padding + i)}
                ) as response:
                    await response.read()
                    status = str(response.status)
            except (TimeoutError, aiohttp.ClientError) as exc:
                status = type(exc).__name__
            statuses[status] += 1
            if status == "200":
                latencies.append((time.perf_counter() - begun) * 1000)
    return {
        "logins": count,
        "ok": len(latencies),
        "statuses": dict(statuses),
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies, default=float("nan")),
    }


async def measure(
    url: str,
    user: str,
    password: str,
    logins: int,
    flood: int,
    warmup: float,
    pid: int | None = None,
) -> dict[str, Any]:
    """`pid`: the server's process, whose CPU each part reports per request it answered
    (the timed logins and the flood's)."""
    out: dict[str, Any] = {"flood_connections": flood}
    padding = 0
    window = cpu.Window(pid) if pid is not None else None
    if window is not None:
        window.start()
    # Each login comes from an address of its own (127.0.1.1, 127.0.1.2, …; 127.0.2.x in the
    # second part, …): the service puts an address that asked for many checks lately behind
    # those that did not, and a user logs in once, not ten times a minute.
    out["quiet"] = await fresh_logins(url, user, password, logins, padding, "127.0.1.")
    if window is not None:
        window.stop()
        out["quiet"]["server_cpu"] = window.result(logins)
    padding += logins
    cases = {
        "flood_one_address": ["127.0.0.2"],
        "flood_many_addresses": [f"127.0.0.{2 + i}" for i in range(flood)],
    }
    for part, (name, addresses) in enumerate(cases.items(), start=2):
        if window is not None:
            window.start()
        with flooding(url, user, flood, addresses) as counts:
            await asyncio.sleep(warmup)  # the flood fills the queue first
            result = await fresh_logins(url, user, password, logins, padding, f"127.0.{part}.")
        result.update(counts, flood_addresses=len(addresses))
        if window is not None:
            window.stop()
            result["server_cpu"] = window.result(logins + counts.get("flood_requests", 0))
        padding += logins
        out[name] = result
    return out


def run_login_flood(logins: int, flood: int, warmup: float) -> dict[str, Any]:
    """The benchmark row: a fresh server with one user at the shipped iterations."""
    from service import auth

    settings = {"users": {USER: auth.hash_password(PASSWORD)}}
    with BenchServer(**settings) as server:
        result = run_loop(
            measure(server.url, USER, PASSWORD, logins, flood, warmup, pid=server.pid)
        )
        result["iterations"] = auth.DEFAULT_ITERATIONS
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running server (default: start one)")
    parser.add_argument("--user", default=USER)
    parser.add_argument("--password", default=PASSWORD)
    parser.add_argument("--logins", type=int, default=10)
    parser.add_argument("--flood", type=int, default=60)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    if args.url:
        result = run_loop(
            measure(args.url, args.user, args.password, args.logins, args.flood, args.warmup)
        )
    else:
        result = run_login_flood(args.logins, args.flood, args.warmup)
    import json

    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()

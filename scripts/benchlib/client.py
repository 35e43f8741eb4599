"""A lean HTTP/1.1 keep-alive client on raw asyncio streams, for loads of a known size.

wrk runs for a time; the end-to-end row needs exactly N submissions and their answers, so
it sends them from here: C connections, each sending its next request when the previous
answer has arrived (like wrk), until N have been sent. It reads only the status line,
Content-Length and the body, so it costs the server's core little.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import orjson


class HttpError(RuntimeError):
    pass


class Connection:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.host = host

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, f"127.0.0.1:{port}")

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if body or method in ("POST", "PUT"):
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
                break
        else:
            if status not in (204, 304):
                raise HttpError(f"{method} {path}: {status} without Content-Length")
        payload = await self.reader.readexactly(length) if length else b""
        return status, payload

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


@dataclass
class SubmitRun:
    task_ids: list[int] = field(default_factory=list)
    #: wall-clock (epoch seconds) just before the first request was written
    first_sent: float = 0.0
    #: wall-clock when the last answer arrived
    last_answer: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)


async def submit_many(port: int, path: str, body: bytes, count: int, connections: int) -> SubmitRun:
    """POSTs `body` to `path` `count` times over `connections` keep-alive connections;
    every answer must be a 201 carrying a task_id."""
    run = SubmitRun()
    conns = await asyncio.gather(*(Connection.open(port) for _ in range(connections)))
    left = count

    async def worker(conn: Connection) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            started = time.perf_counter()
            status, payload = await conn.request("POST", path, body)
            run.latencies_ms.append((time.perf_counter() - started) * 1000)
            if status != 201:
                raise HttpError(f"POST {path}: {status} {payload[:300]!r}")
            run.task_ids.append(int(orjson.loads(payload)["task_id"]))

    run.first_sent = time.time()
    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        run.last_answer = time.time()
        await asyncio.gather(*(c.close() for c in conns))
    return run

"""A small Server-Sent Events reader for tests: parses the wire format as a browser does."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import ClientResponse


@dataclass
class SSEEvent:
    id: int | None
    event: str
    data: str
    raw: list[str] = field(default_factory=list)

    @property
    def json(self) -> Any:
        return orjson.loads(self.data)


class SSEReader:
    """Reads events from a streaming response; comments and retry hints are kept apart."""

    def __init__(self, response: ClientResponse) -> None:
        self.response = response
        self.comments: list[str] = []
        self.retry: int | None = None
        self.lines: list[str] = []

    async def next(self, timeout: float = 10.0) -> SSEEvent | None:
        """The next event, or None at the end of the stream."""
        async with asyncio.timeout(timeout):
            fields: dict[str, list[str]] = {}
            raw: list[str] = []
            while True:
                line_bytes = await self.response.content.readline()
                if not line_bytes:
                    return None
                line = line_bytes.decode().rstrip("\n")
                self.lines.append(line)
                if line == "":
                    if "data" in fields or "event" in fields:
                        event_id = fields.get("id", [None])[-1]
                        return SSEEvent(
                            id=None if event_id is None else int(event_id),
                            event=fields.get("event", ["message"])[-1],
                            data="\n".join(fields.get("data", [])),
                            raw=raw,
                        )
                    continue
                if line.startswith(":"):
                    self.comments.append(line)
                    continue
                raw.append(line)
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "retry":
                    self.retry = int(value)
                    continue
                fields.setdefault(name, []).append(value)

    async def collect(self, timeout: float = 10.0) -> list[SSEEvent]:
        """Every event until the stream ends."""
        events = []
        async with asyncio.timeout(timeout):
            while (event := await self.next(timeout)) is not None:
                events.append(event)
        return events

    async def until(self, predicate: Any, timeout: float = 10.0) -> list[SSEEvent]:
        """Events up to and including the first one `predicate` accepts."""
        events = []
        async with asyncio.timeout(timeout):
            while True:
                event = await self.next(timeout)
                if event is None:
                    raise AssertionError(f"stream ended before the awaited event; got {events}")
                events.append(event)
                if predicate(event):
                    return events


async def stalled(
    port: int, target: str, headers: str = "", receive_buffer: int = 32 * 1024
) -> asyncio.StreamWriter:
    """A connection that sends its GET and never reads; a small receive buffer, so the
    server meets its backpressure early (the kernel's buffers are not the server's memory)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    _, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}\r\n".encode())
    await writer.drain()
    return writer

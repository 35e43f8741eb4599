"""A TCP proxy on loopback that tests can cut, as a network failure would, and that records
what the client sent through it."""

from __future__ import annotations

import asyncio
import contextlib


class Proxy:
    """A TCP proxy on loopback in front of a server: it keeps what clients sent, and `cut()`
    drops every open connection at once, as a failing network would."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        #: the bytes each client connection sent, in order of connection
        self.sent: list[bytearray] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        record = bytearray()
        self.sent.append(record)
        self._writers.update((writer, up_writer))
        for source, sink, log in ((reader, up_writer, record), (up_reader, writer, None)):
            pump = asyncio.create_task(self._pump(source, sink, log))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, log: bytearray | None
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await source.read(65536):
                if log is not None:
                    log.extend(chunk)
                sink.write(chunk)
                await sink.drain()
        sink.close()

    def cut(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def requests_with(self, needle: bytes) -> list[bytes]:
        return [bytes(r) for r in self.sent if needle.lower() in bytes(r).lower()]

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

"""A TCP proxy on loopback that tests can cut, as a network failure would, or partition, as
a network gone silent would, and that records what the client sent through it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable


class Proxy:
    """A TCP proxy on loopback in front of a server: it keeps what clients sent, `cut()`
    drops every open connection at once, as a failing network would, and `partition()`
    lets nothing through either way until `heal()`."""

    def __init__(self, target_port: int, record: bool = True) -> None:
        self.target_port = target_port
        self.port = 0
        #: the bytes each client connection sent, in order of connection (when `record`)
        self.sent: list[bytearray] = []
        self._record = record
        self._writers: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        #: clear while partitioned: nothing is passed on, nothing new gets through
        self._open = asyncio.Event()
        self._open.set()
        #: partition() waits for a client's statement inside a transaction
        self._in_transaction = False
        self._closing = False
        #: down_when(): what a client sends that takes the proxy down
        self._trap: Callable[[bytes], bool] | None = None
        #: down: every connection cut, and new ones refused, until heal()
        self._down = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self._down:  # refused, as a server gone away would
            writer.transport.abort()
            return
        # partitioned: accepted, and then nothing (as a SYN answered by nobody, the client
        # waits for its own timeout), until the network heals
        await self._open.wait()
        if self._closing or writer.transport.is_closing():
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        record = bytearray()
        if self._record:
            self.sent.append(record)
        self._writers.add(up_writer)
        for source, sink, log, upstream in (
            (reader, up_writer, record, True),
            (up_reader, writer, None, False),
        ):
            pump = asyncio.create_task(
                self._pump(source, sink, log if self._record else None, upstream)
            )
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        log: bytearray | None,
        upstream: bool,
    ) -> None:
        began = False
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await source.read(65536):
                # partitioned: held here (and what follows, in the kernel's buffers), so
                # neither end hears anything, nor learns that the other is cut off
                await self._open.wait()
                if upstream and self._trap is not None and self._trap(chunk):
                    self._trap = None  # not passed on: the server never sees it
                    self._down = True
                    self.cut()
                    return
                if log is not None:
                    log.extend(chunk)
                sink.write(chunk)
                await sink.drain()
                if upstream and self._in_transaction:
                    if began:  # the statement after BEGIN has gone through: now
                        self._in_transaction = False
                        self._open.clear()
                    began = b"BEGIN" in chunk
        sink.close()

    def cut(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def partition(self, in_transaction: bool = False) -> None:
        """From now on nothing passes, either way, on the open connections or on new ones,
        and no end is told (no reset, no close): a network gone silent. `in_transaction`:
        once a client (PostgreSQL's) has begun a transaction and sent its first statement
        in it, so the server holds that transaction open, with whatever it locked."""
        if in_transaction:
            self._in_transaction = True
        else:
            self._open.clear()

    def down_when(self, trap: Callable[[bytes], bool]) -> None:
        """Once a client sends something `trap` is true of, that is not passed on, every
        connection is cut and new ones are refused until heal(): a database gone away at
        that very moment (a statement sent and never answered, as a stopped server's)."""
        self._trap = trap

    @property
    def down(self) -> bool:
        return self._down

    @property
    def partitioned(self) -> bool:
        return not self._open.is_set()

    def heal(self) -> None:
        """The network is back: what was held goes on, in order, and new connections pass."""
        self._in_transaction = False
        self._trap = None
        self._down = False
        self._open.set()

    def requests_with(self, needle: bytes) -> list[bytes]:
        return [bytes(r) for r in self.sent if needle.lower() in bytes(r).lower()]

    async def close(self) -> None:
        self._closing = True
        self.cut()
        self._open.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

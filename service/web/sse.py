"""Server-Sent Events routes (SPEC 7): a task's, a graph's and the whole service's events.

aiohttp-sse is not used: its EventSourceResponse awaits one write per event per subscriber
and runs a ping task per connection, which is the design that saturates a core at a
thousand subscribers. Here a stream replays the stored events after Last-Event-ID, then
hands its socket to the event bus, which writes each batch to it without an await; the
keep-alive is one timer for all streams.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
from aiohttp import web

from ..errors import NotFound, ServiceUnavailable
from ..events import CLOSED, EventBus, Refusal, Scope, Subscription, encode, ends_task_stream
from ..model import Event, EventKind
from . import declared, params
from .auth import reachable_graphs
from .keys import EVENTS, REGISTRY, SETTINGS, STORE

#: stored events read per query while replaying; fewer when they are large: a page holds
#: about `sse_buffer_bytes` of data (always at least one event)
REPLAY_PAGE = 1000
#: bytes a replay writes to the socket at a time
PIECE = 64 * 1024


def _last_event_id(request: web.Request) -> int | None:
    """Last-Event-ID, from the header or else the query; both are checked when both come.
    The header wins: a browser's EventSource keeps the URL it was opened with (and the
    first `last_event_id` in it) and sends the id it has reached in the header."""
    from_query = declared.LAST_EVENT_ID_QUERY.get(request)
    from_header = declared.LAST_EVENT_ID_HEADER.get(request)
    return from_query if from_header is None else from_header


async def _resume_point(request: web.Request, last_event_id: int) -> int:
    """An id past the last stored event was never given out by this store (a client of
    another database file, one replaced or restored from a backup): the stream starts from
    now, instead of skipping every event until the ids reach it. An id this store gave out
    is never past the last stored one: ids grow with commits and the purge takes the oldest."""
    return min(last_event_id, await request.app[STORE].last_event_id())


class _ChunkFramer:
    """Frames bytes as one HTTP/1.1 chunk. The bus hands the same bytes object to every
    subscriber of a group in a row, so one remembered framing serves them all."""

    def __init__(self) -> None:
        self._data: bytes | None = None
        self._framed = b""

    def __call__(self, data: bytes) -> bytes:
        if data is not self._data:
            self._data = data
            self._framed = b"%x\r\n%s\r\n" % (len(data), data)
        return self._framed


_frame = _ChunkFramer()


class _Stream:
    """One open stream: the response, a sink that writes straight to its socket (the
    bus's, live), and `send`, which writes a piece at a time and waits for room (the
    replay's). Neither ever writes while the socket's buffer is over `sse_buffer_bytes`."""

    def __init__(self, request: web.Request, response: web.StreamResponse) -> None:
        settings = request.app[SETTINGS]
        self.request = request
        self.response = response
        transport = request.transport
        assert transport is not None
        self.transport = transport
        self.limit = settings.sse_buffer_bytes
        self.stall = settings.sse_stall_seconds
        self.chunked = False
        # The transport pauses its protocol over the bound, so a drain waits exactly for room.
        transport.set_write_buffer_limits(high=self.limit)

    async def open(self, retry_ms: int) -> None:
        await self.response.prepare(self.request)
        self.chunked = self.response.chunked
        # The first write goes through aiohttp so the headers leave with it.
        await self.response.write(b"retry: %d\n\n" % retry_ms)

    def sink(self, data: bytes) -> Refusal | None:
        transport = self.transport
        if transport.is_closing():
            return CLOSED
        waiting = transport.get_write_buffer_size()
        if waiting > self.limit:
            return Refusal(closed=False, waiting=waiting)
        if self.chunked:  # the response is chunked: each write is one chunk
            transport.write(_frame(data))
        else:
            transport.write(data)
        return None

    async def send(self, data: bytes) -> Refusal | None:
        """Writes `data` in pieces of PIECE bytes, each once the socket's buffer is within
        the bound; a client that takes nothing for `sse_stall_seconds` is refused."""
        view = memoryview(data)
        for start in range(0, len(view), PIECE):
            refusal = await self._room()
            if refusal is not None:
                return refusal
            piece = view[start : start + PIECE]
            if self.chunked:
                self.transport.write(b"".join((b"%x\r\n" % len(piece), piece, b"\r\n")))
            else:
                self.transport.write(piece)
        return None

    async def _room(self) -> Refusal | None:
        transport = self.transport
        if transport.is_closing():
            return CLOSED
        if transport.get_write_buffer_size() <= self.limit:
            return None
        try:
            async with asyncio.timeout(self.stall):
                while transport.get_write_buffer_size() > self.limit:
                    await self.request.writer.drain()
                    if transport.is_closing():
                        return CLOSED
                    if transport.get_write_buffer_size() > self.limit:
                        await asyncio.sleep(0.01)  # not paused after all: look again soon
        except TimeoutError:
            return Refusal(closed=False, waiting=transport.get_write_buffer_size())
        except ConnectionError:
            return CLOSED
        return None


async def _send_events(stream: _Stream, events: list[Event]) -> Refusal | None:
    """Events as a few writes of about PIECE bytes: small ones joined, a large one split."""
    batch: list[bytes] = []
    size = 0
    for event in events:
        data = encode(event)
        if batch and size + len(data) > PIECE:
            refusal = await stream.send(b"".join(batch))
            if refusal is not None:
                return refusal
            batch, size = [], 0
        batch.append(data)
        size += len(data)
    return await stream.send(b"".join(batch)) if batch else None


def _check_room(request: web.Request) -> None:
    settings = request.app[SETTINGS]
    limit = settings.max_streams
    if limit and request.app[EVENTS].subscriber_count >= limit:
        raise ServiceUnavailable(
            f"Too many open event streams ({limit}, the setting max_streams); try again later",
            retry_after=max(1, -(-settings.sse_retry_ms // 1000)),
        )


async def _serve(
    request: web.Request,
    scope: Scope,
    start_after: int,
    first: Event | None = None,
    ended: Callable[[], Awaitable[bool]] | None = None,
) -> web.StreamResponse:
    """Replay stored events after `start_after`, then follow live ones, no gap, no duplicate.
    `ended`: asked after the replay; True ends the stream there when nothing newer came
    (a task stream resumed after its task's end: nothing more will come)."""
    _check_room(request)
    bus = request.app[EVENTS]
    store = request.app[STORE]
    settings = request.app[SETTINGS]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    if request.version >= (1, 1):
        response.enable_chunked_encoding()
    stream = _Stream(request, response)
    # Subscribed before any await, so max_streams counts it at once. It collects live
    # events while the stream replays stored ones.
    subscription = bus.subscribe(scope, stream.sink, max_backlog_bytes=stream.limit)
    subscription.last_id = start_after
    try:
        await stream.open(settings.sse_retry_ms)
        if first is not None:
            refusal = await stream.send(encode(first))
            if refusal is not None:
                return _cut(stream, bus, subscription, refusal)
            if scope.task_id is not None and ends_task_stream(first):
                return await _end(stream, bus, subscription)
        while True:
            if subscription.finished.done():  # the service shuts down: end here, cleanly
                return await _end(stream, bus, subscription)
            overflows = subscription.overflows
            page = await store.events_after(
                subscription.last_id, scope.graph, scope.task_id, REPLAY_PAGE, stream.limit
            )
            events = [e for e in page if scope.matches(e)]
            if events:
                refusal = await _send_events(stream, events)
                if refusal is not None:
                    return _cut(stream, bus, subscription, refusal)
                if scope.task_id is not None and any(ends_task_stream(e) for e in events):
                    return await _end(stream, bus, subscription)
            if page:
                # past the whole page, matched or not: the next page starts after it
                subscription.last_id = page[-1].id
            # A full page (by count or by bytes) may have more after it, and a filter may
            # keep few of it: go on. A backlog let go during the read: read it from the store.
            full = len(page) == REPLAY_PAGE or sum(len(e.data) for e in page) >= stream.limit
            if full or subscription.overflows != overflows:
                continue
            # Asked before going live: an event committed since the replay's last query is
            # in the backlog, and one there means the task has moved on (or just ended:
            # that event then ends the stream below).
            done = ended is not None and await ended()
            if subscription.overflows == overflows:
                break
        backlog = bus.go_live(subscription)
        if backlog:
            # no await between go_live and this write; the backlog is within its bound
            refusal = stream.sink(b"".join(encode(e) for e in backlog))
            if refusal is not None:
                return _cut(stream, bus, subscription, refusal)
            if scope.task_id is not None and any(ends_task_stream(e) for e in backlog):
                return await _end(stream, bus, subscription)
        elif done:
            return await _end(stream, bus, subscription)
        clean = await _until_finished(subscription, settings.sse_max_seconds)
        return await _end(stream, bus, subscription, clean=clean)
    except asyncio.CancelledError:
        # the handler is cancelled when its connection is lost (where the server does that)
        # (unless the bus had ended it; awaiting it, the cancel cancels the future)
        finished = subscription.finished
        if not finished.done() or finished.cancelled():
            bus.drop(subscription, CLOSED)
        raise
    finally:
        bus.unsubscribe(subscription)  # however it ended


async def _until_finished(subscription: Subscription, max_seconds: float) -> bool:
    """Waits for the stream's end; a stream that has lived `max_seconds` (when set) ends
    cleanly, and its client comes back with Last-Event-ID, missing nothing."""
    if not max_seconds:
        return await subscription.finished
    # asyncio.wait, not a timeout around the await: the future must not be cancelled
    await asyncio.wait([subscription.finished], timeout=max_seconds)
    return subscription.finished.result() if subscription.finished.done() else True


def _cut(
    stream: _Stream, bus: EventBus, subscription: Subscription, refusal: Refusal
) -> web.StreamResponse:
    """A replay whose client stopped taking it, or left: logged as the bus logs its own."""
    bus.drop(subscription, refusal)
    stream.transport.abort()
    return stream.response


async def _end(
    stream: _Stream, bus: EventBus, subscription: Subscription, clean: bool = True
) -> web.StreamResponse:
    bus.unsubscribe(subscription)
    if clean:
        with contextlib.suppress(ConnectionError):
            await stream.response.write_eof()
    else:
        # Fell behind: cut the connection; the client reconnects with Last-Event-ID.
        stream.transport.abort()
    return stream.response


async def task_events(request: web.Request) -> web.StreamResponse:
    graph = params.graph_of(request)
    task_id = declared.TASK_ID.get(request)
    store = request.app[STORE]
    last_event_id = _last_event_id(request)
    scope = Scope(graph=graph, task_id=task_id)
    if last_event_id is not None:
        last_event_id = await _resume_point(request, last_event_id)
        task = await store.get(graph, task_id)
        if (task is None or task.completed) and not await store.events_after(
            last_event_id, graph, task_id, 1
        ):
            if task is None:
                raise NotFound(f"Can't find task with id '{task_id}'")
            # It ended at or before the id resumed from (or its events were purged): nothing
            # will come. A 204 says so, and an EventSource stops reconnecting on it, where
            # an empty stream would have it come back every `retry` for ever.
            return web.Response(status=204)

        async def ended() -> bool:
            # Completed (or gone) before the stream went live: its end was before the id
            # resumed from, or purged with its older events; the stream ends as it would
            # have after that end.
            task = await store.get(graph, task_id)
            return task is None or task.completed

        return await _serve(request, scope, last_event_id, ended=ended)
    # No Last-Event-ID: first the task's current state, then every change after it. The
    # event id is read before the task, so every change the snapshot misses comes after.
    start_after = await store.last_event_id()
    task = await store.get(graph, task_id)
    if task is None:
        raise NotFound(f"Can't find task with id '{task_id}'")
    snapshot = Event(
        id=start_after,
        kind=EventKind.STATUS,
        task_id=task.id,
        graph=task.graph,
        task_type=task.type,
        status=task.status,
        data=orjson.dumps(task.to_api()),
    )
    return await _serve(request, scope, start_after, first=snapshot)


async def graph_events(request: web.Request) -> web.StreamResponse:
    graph = params.graph_of(request)
    status_text = declared.STREAM_STATUS.text(request)
    scope = Scope(
        graph=graph,
        status=None if status_text is None else declared.STREAM_STATUS.parse(status_text),
        # as the task list takes it: a type no one registered is a 400, not a stream that
        # never says anything
        task_type=declared.STREAM_TYPE.get(request, request.app[REGISTRY].names()),
    )
    return await _follow(request, scope)


async def service_events(request: web.Request) -> web.StreamResponse:
    # a caller granted some graphs only gets their events
    return await _follow(request, Scope(graphs=reachable_graphs(request)))


async def _follow(request: web.Request, scope: Scope) -> web.StreamResponse:
    last_event_id = _last_event_id(request)
    if last_event_id is None:
        # a new subscriber of a graph or the service starts from now
        last_event_id = await request.app[STORE].last_event_id()
    else:
        last_event_id = await _resume_point(request, last_event_id)
    return await _serve(request, scope, last_event_id)


async def events_ctx(app: web.Application) -> AsyncIterator[None]:
    """The bus, fed by the store's commits, with one keep-alive timer for every stream."""
    bus = app[EVENTS]
    app[STORE].add_listener(bus.publish)
    interval = app[SETTINGS].sse_keepalive

    async def keepalive() -> None:
        while True:
            await asyncio.sleep(interval)
            bus.keepalive()

    timer = asyncio.create_task(keepalive(), name="sidetask-sse-keepalive")
    yield
    timer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await timer


async def close_streams(app: web.Application) -> None:
    """on_shutdown: open streams end cleanly before the supervisor drains."""
    app[EVENTS].close()

"""The event bus: committed events fanned out to live subscribers, each encoded once.

The store calls `publish` after every commit with that commit's events (the event log
itself is the `events` table, written in the same transaction as each change). The bus
turns each event into its Server-Sent Events bytes once, groups subscribers by what they
asked for, joins the bytes each group gets, and hands every subscriber one buffer per
loop iteration through its sink: no task and no await per subscriber, so a slow
subscriber costs nobody else anything. A sink refuses when its subscriber's buffer is over
the bound; the bus then disconnects it, and it comes back with Last-Event-ID. A sink that
refuses because its connection is closed is a subscriber that left, logged as such.

Progress is coalesced at its source (the supervisor writes at most one progress event per
task per `progress_interval`), so the stored log and the live stream are the same
sequence, in id order, and a replay after a reconnect sees exactly what a live
subscriber saw.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .model import COMPLETED_STATUSES, Event, EventKind, GraphRef, Status

log = logging.getLogger("sidetask.events")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a sink wrote nothing: its connection is closed (the subscriber left), or it
    has `waiting` bytes unsent, over its bound (it fell behind)."""

    closed: bool
    waiting: int = 0


CLOSED = Refusal(closed=True)

#: writes bytes to a subscriber; None when written, else why not
Sink = Callable[[bytes], Refusal | None]

KEEPALIVE = b": keep-alive\n\n"


def encode(event: Event) -> bytes:
    """One event on the wire: id, event name, one line of compact JSON."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.id, event.kind.value.encode(), event.data)


def ends_task_stream(event: Event) -> bool:
    """A task's stream ends after a completed status or its deletion."""
    return event.kind is EventKind.DELETED or (
        event.kind is EventKind.STATUS and event.status in COMPLETED_STATUSES
    )


@dataclass(frozen=True, slots=True)
class Scope:
    """What a subscriber asked for: one task, one graph (optionally by status and type), or all."""

    graph: GraphRef | None = None
    task_id: int | None = None
    status: Status | None = None
    task_type: str | None = None
    #: only these graphs' events (a caller whose grants name some graphs); None: all
    graphs: frozenset[GraphRef] | None = None

    def __str__(self) -> str:
        if self.task_id is not None:
            return f"task {self.task_id}"
        if self.graph is not None:
            what = f"graph {self.graph}"
        elif self.graphs is not None:  # a caller granted some graphs: theirs only
            what = "graphs " + ", ".join(sorted(map(str, self.graphs)))
        else:
            what = "every graph"
        if self.status is not None:
            what += f", status {self.status.value}"
        if self.task_type is not None:
            what += f", type {self.task_type}"
        return what

    def matches(self, event: Event) -> bool:
        if self.task_id is not None and event.task_id != self.task_id:
            return False
        if self.graph is not None and event.graph != self.graph:
            return False
        if self.graphs is not None and event.graph not in self.graphs:
            return False
        if self.status is not None and event.status is not self.status:
            return False
        return self.task_type is None or event.task_type == self.task_type


@dataclass(eq=False)
class Subscription:
    """One subscriber. Until `go_live` it collects events in `backlog` while its stream
    replays stored ones; after, the bus writes to its sink directly.

    A backlog over `max_backlog` events or `max_backlog_bytes` bytes of data is let go
    (every event in it is stored) and `overflows` counts it: the replay then reads those
    events from the store, so a long replay holds no more than the bound."""

    scope: Scope
    sink: Sink
    max_backlog: int
    max_backlog_bytes: int
    #: the id of the last event this subscriber was given; later ones only
    last_id: int = 0
    live: bool = False
    backlog: list[Event] = field(default_factory=list)
    backlog_bytes: int = 0
    overflows: int = 0
    #: resolved when the stream should end: True for a clean end, False for a drop
    finished: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def finish(self, clean: bool) -> None:
        if not self.finished.done():
            self.finished.set_result(clean)


class EventBus:
    """Fans committed events out to subscribers."""

    def __init__(self, *, max_backlog: int = 10_000) -> None:
        self._groups: dict[Scope, set[Subscription]] = {}
        self._pending: list[Event] = []
        self._flush_scheduled = False
        self._max_backlog = max_backlog
        self.closed = False
        #: subscribers dropped for falling behind
        self.dropped = 0

    @property
    def subscriber_count(self) -> int:
        return sum(len(group) for group in self._groups.values())

    def subscribe(self, scope: Scope, sink: Sink, max_backlog_bytes: int = 1 << 62) -> Subscription:
        subscription = Subscription(scope, sink, self._max_backlog, max_backlog_bytes)
        if self.closed:
            subscription.finish(True)
            return subscription
        self._groups.setdefault(scope, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._remove(subscription)
        subscription.finish(True)

    def _remove(self, subscription: Subscription) -> None:
        group = self._groups.get(subscription.scope)
        if group is not None:
            group.discard(subscription)
            if not group:
                del self._groups[subscription.scope]

    def go_live(self, subscription: Subscription) -> list[Event]:
        """Ends the replay: returns the collected events after `last_id` for the stream to
        write now; from here on the bus writes to the sink itself. Called without an await
        between it and the stream's last write, so no event falls into the seam."""
        backlog = [e for e in subscription.backlog if e.id > subscription.last_id]
        subscription.backlog = []
        subscription.backlog_bytes = 0
        subscription.live = True
        if backlog:
            subscription.last_id = backlog[-1].id
        return backlog

    # --- publishing ---

    def publish(self, events: Sequence[Event]) -> None:
        """The store's commit listener: events of one commit, in id order."""
        if self.closed or not self._groups:
            return
        self._pending.extend(events)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            # Everything committed in this loop iteration goes out in one write per subscriber.
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        events, self._pending = self._pending, []
        if not events:
            return
        encoded = {event.id: encode(event) for event in events}
        for scope, group in list(self._groups.items()):
            matching = [e for e in events if scope.matches(e)]
            if not matching:
                continue
            payload = b"".join(encoded[e.id] for e in matching)
            last_id = matching[-1].id
            ending = scope.task_id is not None and any(ends_task_stream(e) for e in matching)
            for subscription in list(group):
                self._deliver(subscription, matching, payload, last_id, ending)

    def _deliver(
        self,
        subscription: Subscription,
        matching: list[Event],
        payload: bytes,
        last_id: int,
        ending: bool,
    ) -> None:
        if not subscription.live:
            subscription.backlog.extend(matching)
            subscription.backlog_bytes += sum(len(e.data) for e in matching)
            if (
                len(subscription.backlog) > subscription.max_backlog
                or subscription.backlog_bytes > subscription.max_backlog_bytes
            ):
                # all of it is stored: the replay reads it from there instead
                subscription.backlog = []
                subscription.backlog_bytes = 0
                subscription.overflows += 1
            return
        if matching[0].id <= subscription.last_id:
            # Some of these reached it through its replay: write only what is newer.
            fresh = [e for e in matching if e.id > subscription.last_id]
            if not fresh:
                return
            payload = b"".join(encode(e) for e in fresh)
        refusal = subscription.sink(payload)
        if refusal is not None:
            self.drop(subscription, refusal)
            return
        subscription.last_id = last_id
        if ending:
            self.unsubscribe(subscription)

    def drop(self, subscription: Subscription, refusal: Refusal) -> None:
        """Ends a subscription its sink refused: one that left is let go; one over its
        bound is disconnected, so nobody waits for it, and comes back with Last-Event-ID."""
        if refusal.closed:
            log.debug("a subscriber disconnected (%s)", subscription.scope)
        else:
            self.dropped += 1
            log.info(
                "dropping a subscriber that fell behind (%s): %d bytes waiting",
                subscription.scope,
                refusal.waiting,
            )
        self._remove(subscription)
        subscription.finish(False)

    # --- keep-alive and shutdown ---

    def keepalive(self) -> None:
        """A comment to every live subscriber, so proxies keep idle streams open."""
        for group in list(self._groups.values()):
            for subscription in list(group):
                if subscription.live and (refusal := subscription.sink(KEEPALIVE)) is not None:
                    self.drop(subscription, refusal)

    def close(self) -> None:
        """Ends every stream cleanly (on shutdown, before the supervisor drains)."""
        self.closed = True
        for group in list(self._groups.values()):
            for subscription in list(group):
                subscription.finish(True)
        self._groups.clear()

"""The event stream: every job and server change, numbered, kept for a while so clients can resume.

The registry says what changed; this keeps the last changes in a bounded window and hands them to every
subscriber (the SSE route). A client that reconnects with ``Last-Event-ID`` gets what it missed, if it is
still in the window, or a ``reset`` (reload) if it is not.

A single service numbers its events itself. Replicas publish the events of the shared change log, with its
numbers (core/replication.py): the same events, in the same order, under the same ids on every replica, so
that a client may resume on any of them.
"""

import asyncio
import time
from collections import deque
from dataclasses import dataclass

from orthanc_jobs.core.errors import ServerUnavailable
from orthanc_jobs.core.wire import sse_frame

# Changes kept for clients that reconnect; beyond, they are told to reload.
WINDOW = 10_000
# Changes a subscriber may have waiting; a client that slow is dropped (it reconnects and resumes).
SUBSCRIBER_BACKLOG = 5_000
# Event streams open at once (each a long request, outside the bound on requests in progress).
MAX_STREAMS = 1_000


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    kind: str  # job, server, removed, reset
    data: bytes

    def encode(self) -> bytes:
        return sse_frame(self.id, self.kind, self.data)


class EventLog:
    def __init__(self, window: int = WINDOW, first_id: int | None = None) -> None:
        self._recent: deque[Event] = deque(maxlen=window)
        # Ids go on growing across restarts of the service (a thousand a millisecond since the epoch), so
        # that a client resuming after a restart is never told "nothing new" for ids it already had.
        self._next_id = first_id if first_id is not None else time.time_ns() // 1000
        #: The newest id of an event no longer kept: a client that had only older ones missed some.
        self._horizon = self._next_id - 1
        self._subscribers: set[asyncio.Queue[Event | None]] = set()

    @property
    def last_id(self) -> int:
        return self._next_id - 1

    def start_at(self, last_id: int, horizon: int, recent: list[Event]) -> None:
        """Continue a shared numbering (replicas): ``recent`` events kept, every event up to ``horizon``
        not, ``last_id`` the last change seen (events may skip numbers)."""
        window = self._recent.maxlen or len(recent)
        self._recent.clear()
        self._recent.extend(recent)
        self._horizon = horizon if len(recent) <= window else recent[-window - 1].id
        self._next_id = last_id + 1

    def skip_to(self, last_id: int) -> None:
        """Changes up to ``last_id`` were seen, none of them shown (a replica's change log)."""
        self._next_id = max(self._next_id, last_id + 1)

    def publish(self, kind: str, data: bytes, event_id: int | None = None) -> None:
        """Tell every stream; ``event_id``: the change log's number (replicas), else the next of ours."""
        event = Event(self._next_id if event_id is None else event_id, kind, data)
        self._next_id = event.id + 1
        if len(self._recent) == self._recent.maxlen:
            self._horizon = self._recent[0].id
        self._recent.append(event)
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self._subscribers.discard(queue)
                queue.get_nowait()  # room for the end mark: the client reconnects and resumes
                queue.put_nowait(None)

    def subscribe(self) -> "asyncio.Queue[Event | None]":
        """A new stream's queue; ServerUnavailable past MAX_STREAMS open streams."""
        if len(self._subscribers) >= MAX_STREAMS:
            raise ServerUnavailable(f"{MAX_STREAMS} event streams are open (the most allowed): try again")
        queue: asyncio.Queue[Event | None] = asyncio.Queue(SUBSCRIBER_BACKLOG)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: "asyncio.Queue[Event | None]") -> None:
        self._subscribers.discard(queue)

    def since(self, last_id: int) -> list[Event] | None:
        """The events after ``last_id``; None if some of them already left the window."""
        if last_id > self.last_id:
            return None  # an id from the future: the service restarted with another clock; reload
        if last_id < self._horizon:
            return None
        if last_id == self.last_id:
            return []
        return [event for event in self._recent if event.id > last_id]

    def end(self, queue: "asyncio.Queue[Event | None]") -> None:
        """End one stream (its caller's credentials are refused now); once ended, nothing more happens."""
        if queue not in self._subscribers:
            return
        self._subscribers.discard(queue)
        if queue.full():
            queue.get_nowait()
        queue.put_nowait(None)

    def close_all(self) -> None:
        """End every stream (the service stops)."""
        for queue in list(self._subscribers):
            self.end(queue)

"""How the job-service listens: uvicorn, with limits a slow or hostile client cannot get around.

uvicorn keeps a connection for as long as its client takes to send a request's headers. A client that
opens thousands of connections and sends half a request on each (slowloris) would hold them for ever,
until the process has no file handle left: then nothing is accepted, not even the plugins' events. Here:

- a request's headers must arrive within ``header_timeout`` of its first byte (or of the connection);
- a request answered before its body arrived (refused, or its body late) closes its connection;
- at most ``max_connections`` connections are open; past that, a new connection closes the one whose
  request has been arriving longest (a client that sends its request at once, as nginx and the plugins
  do, is never the oldest), or is closed itself if every connection is busy with a request;
- the process takes all the file handles it may (its soft limit raised to the hard one), and keeps room
  for its own (connections to Orthanc, the history file).

Bodies have their own deadline (api/limits.py), and requests in progress their own bound.

The protocol also answers, in the call that parses a request's headers, the job reads that need nothing
awaited (``answer_at_once``, from api/fast.py): uvicorn would otherwise make a task, an ASGI scope and its
messages for each, which cost as much again as the answer itself (bench/README.md). The bytes written are
the ones uvicorn writes for the application's answer (a unit test compares them).
"""

import asyncio
import logging
import resource
import socket
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

#: (method, request target, headers, body) -> (answer headers, body), or None: the application answers.
#: The body is None when it is not all in yet (or chunked).
AnswerAtOnce = Callable[
    [bytes, bytes, list[tuple[bytes, bytes]], bytes | None], tuple[list[tuple[bytes, bytes]], bytes] | None
]

# File handles kept for the process's own use: its connections to the Orthanc servers, the history file,
# the logs.
RESERVED_FILES = 512
# Stopping, how long requests on open connections are still answered (each closing its connection).
DRAIN_SECONDS = 1.0


def raise_open_file_limit() -> int:
    """Raise the soft limit of open files to the hard one; the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as error:
            log.warning("could not raise the open files limit from %d to %d: %s", soft, hard, error)
    return soft


class ConnectionGuard:
    """The connections of one server, and which of them are still receiving a request, since when."""

    def __init__(
        self, max_connections: int, header_timeout: float, answer_at_once: AnswerAtOnce | None = None
    ) -> None:
        self.configured_max = max_connections
        #: Answers a request from its method, target and headers without awaiting anything, or None.
        self.answer_at_once = answer_at_once
        self.max_connections = allowed_connections(max_connections)
        self.header_timeout = header_timeout
        self.open = 0
        self.evicted = 0
        self.timed_out = 0
        #: The server stops: every answer closes its connection (JobServiceServer).
        self.draining = False
        # Connections whose request has not fully arrived, oldest first, with the timer of its headers
        # (None once they are in: the body has its own deadline, api/limits.py).
        self._incomplete: OrderedDict[GuardedProtocol, asyncio.TimerHandle | None] = OrderedDict()
        self._last_warning = 0.0

    def opened(self, protocol: "GuardedProtocol") -> bool:
        """Account for a new connection; False if it must be closed at once (no room)."""
        # The open files limit may change while the process runs (prlimit): the bound follows it (one
        # system call per connection).
        self.max_connections = allowed_connections(self.configured_max)
        if self.open >= self.max_connections:
            if not self._incomplete:
                self._warn("every connection is busy with a request")
                return False
            oldest, timer = self._incomplete.popitem(last=False)
            if timer is not None:
                timer.cancel()
            self.evicted += 1
            self._warn("closing the connections whose request has been arriving longest")
            oldest.close_incomplete()
        self.open += 1
        return True

    def closed(self, protocol: "GuardedProtocol") -> None:
        self.open -= 1
        self.request_received(protocol)

    def request_begins(self, protocol: "GuardedProtocol") -> None:
        if protocol not in self._incomplete:
            loop = asyncio.get_running_loop()
            self._incomplete[protocol] = loop.call_later(self.header_timeout, self._time_out, protocol)

    def headers_received(self, protocol: "GuardedProtocol") -> None:
        timer = self._incomplete.get(protocol)
        if timer is not None:
            timer.cancel()
            self._incomplete[protocol] = None

    def request_received(self, protocol: "GuardedProtocol") -> None:
        timer = self._incomplete.pop(protocol, None)
        if timer is not None:
            timer.cancel()

    def _time_out(self, protocol: "GuardedProtocol") -> None:
        if self._incomplete.pop(protocol, None) is not None:
            self.timed_out += 1
            protocol.close_incomplete()

    def _warn(self, message: str) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._last_warning >= 60:
            self._last_warning = now
            log.warning("%d connections open (the most allowed): %s", self.open, message)


_STATUS_200 = b"HTTP/1.1 200 OK\r\n"


class _NothingWaits:
    def set(self) -> None:
        pass


class _Answered:
    """In place of uvicorn's request cycle, for a request answered at once: complete, nothing to wait for."""

    response_complete = True
    more_body = False
    keep_alive = True
    disconnected = False
    message_event = _NothingWaits()


_ANSWERED = _Answered()


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, accounted for by a ConnectionGuard."""

    guard: ConnectionGuard

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if not self.guard.opened(self):
            transport.abort()
            return
        self._guarded = True
        super().connection_made(transport)
        self.guard.request_begins(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if getattr(self, "_guarded", False):
            self._guarded = False
            self.guard.closed(self)
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._data = data  # for _body_at_hand
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.guard.request_begins(self)

    def on_headers_complete(self) -> None:
        self.guard.headers_received(self)
        if self._answered_at_once():
            return
        super().on_headers_complete()
        if self.guard.draining and self.cycle is not None:
            self.cycle.keep_alive = False  # answered with Connection: close: the client opens another

    def on_message_complete(self) -> None:
        self.guard.request_received(self)
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self.cycle is not None and self.cycle.more_body:
            # Answered before its body arrived (refused, or its body late): what is still coming would
            # keep the connection for nothing, a byte at a time.
            self.transport.close()
            return
        super().on_response_complete()

    def _answered_at_once(self) -> bool:
        """Answer the request now, in this call, if the application can without awaiting anything (a job
        read: ``ConnectionGuard.answer_at_once``), on a kept-alive HTTP/1.1 connection with no earlier
        request still being answered, and room in the connection's write buffer. The answer is the bytes
        uvicorn would write for the application's."""
        answer_at_once = self.guard.answer_at_once
        if (
            answer_at_once is None
            or self.guard.draining
            or (self.cycle is not None and not self.cycle.response_complete)
            # The client reads its answers slower than it sends requests: the application answers, and
            # waits for it (uvicorn then stops reading); answered here, they would pile up in memory.
            or self.flow.write_paused
            or self.parser.get_http_version() != "1.1"
            or not self.parser.should_keep_alive()
            or self.parser.should_upgrade()
        ):
            return False
        method = self.parser.get_method()
        answer = answer_at_once(method, self.url, self.headers, self._body_at_hand(method))
        if answer is None:
            return False
        headers, body = answer
        content = [_STATUS_200]
        for name, value in (*self.server_state.default_headers, *headers):
            content.extend((name, b": ", value, b"\r\n"))
        content.append(b"\r\n")
        content.append(body)
        self.transport.write(b"".join(content))
        self.cycle = _ANSWERED  # type: ignore[assignment]
        self.on_response_complete()
        return True

    def _body_at_hand(self, method: bytes) -> bytes | None:
        """The body of the request whose headers are in: empty if it has none; itself if it came whole in
        the data being parsed, with its headers and nothing else (as a plugin sends a heartbeat); else
        None (still to come, chunked, or behind another request in the same data)."""
        length = 0
        for name, value in self.headers:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    return None
            elif name == b"transfer-encoding":
                return None
        if not length:
            return b""
        data = self._data
        start = data.find(b"\r\n\r\n") + 4
        if start < 4 or len(data) - start != length or not data.startswith(method + b" " + self.url + b" "):
            return None
        return data[start:]

    def close_incomplete(self) -> None:
        """Close a connection whose request has not fully arrived."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedProtocol]:
    """A protocol class for uvicorn's ``http`` setting, bound to one guard."""
    return type("BoundGuardedProtocol", (GuardedProtocol,), {"guard": guard})


def allowed_connections(configured: int) -> int:
    """The connections allowed: as configured, within the open files limit less the reserve."""
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit == resource.RLIM_INFINITY:
        return configured
    return min(configured, max(64, limit - RESERVED_FILES))


def uvicorn_options(
    max_connections: int, header_timeout: float, answer_at_once: AnswerAtOnce | None = None
) -> dict[str, Any]:
    """uvicorn settings for the job-service: the guarded protocol, and room for its connections."""
    limit = raise_open_file_limit()
    guard = ConnectionGuard(max_connections, header_timeout, answer_at_once)
    if guard.max_connections < max_connections:
        log.info("at most %d connections (open files limit %d)", guard.max_connections, limit)
    # ws "none": a connection handed to a WebSocket protocol would leave the guard's count.
    # proxy_headers off: nothing here reads the client's address (no access log), and uvicorn's middleware
    # for it would cost every request.
    return {
        "http": guarded_protocol(guard),
        "ws": "none",
        "backlog": min(4096, guard.max_connections),
        "proxy_headers": False,
    }


class JobServiceServer(uvicorn.Server):
    """uvicorn's server, which ends the event streams as soon as it stops (they would otherwise hold the
    stop for the whole grace period, then be cancelled with an error in the log), and drains its
    connections before it closes them.

    A load balancer in front (nginx) keeps connections open to reuse them; one it reuses at the moment this
    server closes it fails, and a POST it had sent on it is not sent again elsewhere (502). So, stopping:
    no new connection is accepted (the load balancer connects to another replica, and may send anything
    there, since nothing was sent), requests on the open ones are answered for DRAIN_SECONDS with
    ``Connection: close`` (the load balancer closes each after its answer), then the rest are closed.
    """

    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_stop = on_stop

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._on_stop()
        guard: ConnectionGuard | None = getattr(self.config.http, "guard", None)
        if guard is not None and self.server_state.connections and not self.force_exit:
            for server in self.servers:
                server.close()
            guard.draining = True
            await asyncio.sleep(DRAIN_SECONDS)
        await super().shutdown(sockets)

"""Server-Sent Events, read as the HTML standard reads an event stream: bytes -> lines -> events."""

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from orthanc_jobs.client.errors import ApiError

__all__ = ["ServerSentEvent", "SseDecoder", "parse_sse", "sse_lines"]

# Longest line accepted from the event stream (a job's JSON is a few kB).
_MAX_SSE_LINE = 16 * 1024 * 1024
_EOL = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One event of an event stream; ``id`` is the last event id seen when it was dispatched."""

    event: str = "message"
    data: str = ""
    id: str = ""

    def json(self) -> Any:
        return json.loads(self.data)


def sse_lines(chunks: Iterable[bytes], max_line: int = _MAX_SSE_LINE) -> Iterator[str]:
    """The lines of an event stream, ended by CRLF, LF or CR only (a JSON string may hold U+2028, which
    ``str.splitlines`` would take for a line end). A last line without its end is dropped, as the
    standard says."""
    pending = b""
    skip_lf = False  # the previous chunk ended with CR: a LF that starts this one belongs to it
    for chunk in chunks:
        if not chunk:
            continue
        if skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        skip_lf = False
        pending += chunk
        position = 0
        for match in _EOL.finditer(pending):
            yield pending[position : match.start()].decode("utf-8", "replace")
            position = match.end()
            skip_lf = match.group() == b"\r" and position == len(pending)
        pending = pending[position:]
        if len(pending) > max_line:
            raise ApiError(f"the event stream sent a line longer than {max_line} bytes")


class SseDecoder:
    """Server-Sent Events from lines, as the HTML standard interprets an event stream.

    ``feed`` takes one line at a time and returns an event when a blank line ends one (with data).
    ``last_event_id`` is what to send back as ``Last-Event-ID`` when reconnecting; ``retry`` the
    reconnection delay the server asked for, in milliseconds.
    """

    def __init__(self, last_event_id: str = "") -> None:
        self.last_event_id = last_event_id
        self.retry: int | None = None
        self._event = ""
        self._data: list[str] = []
        self._first = True

    def feed(self, line: str) -> ServerSentEvent | None:
        if self._first:
            self._first = False
            line = line.removeprefix("\ufeff")
        if not line:
            return self._dispatch()
        if line.startswith(":"):  # a comment, e.g. ": keepalive"
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        event, data = self._event or "message", self._data
        self._event, self._data = "", []
        if not data:
            return None
        return ServerSentEvent(event, "\n".join(data), self.last_event_id)


def parse_sse(chunks: Iterable[bytes]) -> Iterator[ServerSentEvent]:
    """Every event of a whole event stream (bytes as they arrive)."""
    decoder = SseDecoder()
    for line in sse_lines(chunks):
        event = decoder.feed(line)
        if event is not None:
            yield event

"""How the service listens: connections bounded, half-sent requests and trickled bodies closed (on a real
uvicorn server too)."""

import asyncio
from typing import Any

import pytest

from orthanc_jobs.api.http_server import ConnectionGuard, JobServiceServer, uvicorn_options
from tests.unit.api.conftest import start_uvicorn, uvicorn_serving


class FakeConnection:
    def __init__(self) -> None:
        self.closed = False

    def close_incomplete(self) -> None:
        self.closed = True


def _open(guard: ConnectionGuard, count: int) -> list[FakeConnection]:
    connections = [FakeConnection() for _ in range(count)]
    for connection in connections:
        assert guard.opened(connection)  # type: ignore[arg-type]
        guard.request_begins(connection)  # type: ignore[arg-type]
    return connections


async def test_past_the_bound_the_connection_waiting_longest_for_its_headers_is_closed() -> None:
    guard = ConnectionGuard(max_connections=3, header_timeout=60)
    first, second, third = _open(guard, 3)
    guard.request_received(first)  # type: ignore[arg-type]  # busy with a request: not closed for room

    assert guard.opened(FakeConnection())  # type: ignore[arg-type]

    assert (first.closed, second.closed, third.closed) == (False, True, False)
    assert guard.evicted == 1


async def test_when_every_connection_is_busy_a_new_one_is_refused() -> None:
    guard = ConnectionGuard(max_connections=2, header_timeout=60)
    for connection in _open(guard, 2):
        guard.request_received(connection)  # type: ignore[arg-type]
    assert not guard.opened(FakeConnection())  # type: ignore[arg-type]


async def test_headers_that_do_not_arrive_in_time_close_the_connection() -> None:
    guard = ConnectionGuard(max_connections=10, header_timeout=0.05)
    slow, prompt = _open(guard, 2)
    guard.headers_received(prompt)  # type: ignore[arg-type]
    await asyncio.sleep(0.1)
    assert slow.closed and not prompt.closed
    assert guard.timed_out == 1


async def answer_ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An application that answers every request at once, without reading its body."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
async def guarded_server() -> Any:
    """A real uvicorn server with the guarded protocol (20 connections, 0.3 s for headers), answering
    every request at once without reading its body."""

    options = uvicorn_options(max_connections=20, header_timeout=0.3)
    async with uvicorn_serving(answer_ok, options) as port:
        yield port, options["http"].guard


async def _connect(port: int, first_bytes: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(first_bytes)
    await writer.drain()
    return reader, writer


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        while await asyncio.wait_for(reader.read(1024), 0.05):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def test_half_sent_requests_make_room_and_time_out_on_a_real_server(guarded_server: Any) -> None:
    port, guard = guarded_server
    half_sent = [await _connect(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ") for _ in range(40)]
    await asyncio.sleep(0.05)
    reader, writer = await _connect(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await asyncio.wait_for(reader.read(1024), 5)).startswith(b"HTTP/1.1 200")
    writer.close()
    assert guard.open <= 21 and guard.evicted >= 20
    await asyncio.sleep(0.5)  # past the header timeout: every one left is closed
    assert [await _closed(r) for r, _ in half_sent] == [True] * len(half_sent)
    assert guard.timed_out >= 1


async def test_a_body_trickled_after_the_answer_closes_the_connection(guarded_server: Any) -> None:
    port, guard = guarded_server
    reader, writer = await _connect(port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nab")
    assert (await asyncio.wait_for(reader.read(1024), 5)).startswith(b"HTTP/1.1 200")
    writer.write(b"c")  # a byte at a time, for ever: the server does not wait for it
    assert await _closed(reader) or await _closed(reader)
    await asyncio.sleep(0.05)
    assert guard.open == 0


async def test_stopping_it_drains_open_connections_before_closing_them() -> None:
    """A load balancer's kept-alive connection used as the service stops gets its answer (with Connection:
    close), not a reset; new connections are refused at once (the load balancer tries another replica)."""

    options = uvicorn_options(max_connections=20, header_timeout=5)
    stopped: list[bool] = []
    server, serving, port = await start_uvicorn(
        answer_ok, options, JobServiceServer, on_stop=lambda: stopped.append(True)
    )
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    reader, writer = await _connect(port, request)
    assert b"200 OK" in await reader.readuntil(b"ok")

    server.should_exit = True
    await asyncio.sleep(0.3)  # the service is stopping
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)  # the kept-alive connection, used now
    answer = await reader.readuntil(b"ok")

    assert b"200 OK" in answer and b"connection: close" in answer.lower()
    assert await _closed(reader)
    await serving
    assert stopped == [True]

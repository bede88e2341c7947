"""Limits a slow or hostile client cannot get around: connections, bodies, requests in progress, and a
connection pool an unexpected error broke out of."""

import asyncio
from typing import Any

import httpx
import pytest
import uvicorn

from orthanc_jobs.api.limits import RequestLimits
from orthanc_jobs.api.server import ConnectionGuard, uvicorn_options
from orthanc_jobs.core.model import Server
from orthanc_jobs.core.orthanc import OrthancClient, OrthancUnreachable

SERVER = Server(
    url="http://127.0.0.1:8001",
    name="orthanc-1",
    incarnation="inc-1",
    token="Bearer t",
    registered_at=0,
    last_seen=0,
)


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


async def _call(app: RequestLimits, path: str, body_chunks: list[bytes], delay: float = 0) -> dict[str, Any]:
    chunks = list(body_chunks)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(delay)
        body = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": body, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b""}
    await app(scope, receive, send)
    return {"status": sent[0]["status"], "body": b"".join(m.get("body", b"") for m in sent[1:])}


async def _read_body(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_a_body_that_does_not_arrive_in_time_is_refused() -> None:
    from orthanc_jobs.core.errors import RequestTimeout

    app = RequestLimits(_read_body, max_bytes=1000, body_timeout=0.05, max_requests_in_progress=10)
    assert (await _call(app, "/jobs", [b"a", b"b"]))["status"] == 200
    with pytest.raises(RequestTimeout):  # the application's error handler makes it a 408
        await _call(app, "/jobs", [b"a", b"b", b"c"], delay=0.03)


async def test_public_requests_in_progress_are_bounded_but_not_the_plugins() -> None:
    release = asyncio.Event()

    async def held(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await release.wait()
        await _read_body(scope, receive, send)

    app = RequestLimits(held, max_bytes=1000, body_timeout=5, max_requests_in_progress=2)
    holding = [asyncio.ensure_future(_call(app, "/jobs", [b""])) for _ in range(2)]
    await asyncio.sleep(0.01)

    refused = await _call(app, "/jobs", [b""])
    assert refused["status"] == 503 and b'"HttpStatus":503' in refused["body"]
    plugin = asyncio.ensure_future(_call(app, "/orthanc-jobs/internal/events", [b""]))
    health = asyncio.ensure_future(_call(app, "/healthz", [b""]))
    release.set()
    assert [r["status"] for r in await asyncio.gather(*holding, plugin, health)] == [200] * 4
    assert app.in_progress == 0


async def test_an_unexpected_error_out_of_the_pool_replaces_it() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError(24, "Too many open files")  # not an httpx error: the pool may be broken
        return httpx.Response(200, json={"Version": "1.10.1"})

    client = OrthancClient(5, transport=httpx.MockTransport(handler))
    first_pool = client._http
    with pytest.raises(OrthancUnreachable, match="connection pool replaced"):
        await client.check_reachable(SERVER, 1)
    assert client.pools_replaced == 1 and client._http is not first_pool
    assert not first_pool.is_closed  # requests still under way on it may finish
    await client.check_reachable(SERVER, 1)  # the next request goes through the new pool
    await client.aclose()
    assert first_pool.is_closed and client._http.is_closed


async def test_a_burst_of_errors_out_of_one_pool_replaces_it_once() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.01)  # every request under way on the pool when the errors come
        raise OSError(24, "Too many open files")

    client = OrthancClient(5, transport=httpx.MockTransport(handler))
    answers = await asyncio.gather(
        *(client.check_reachable(SERVER, 1) for _ in range(20)), return_exceptions=True
    )
    assert all(isinstance(answer, OrthancUnreachable) for answer in answers)
    assert client.pools_replaced == 1
    await client.aclose()


@pytest.fixture
async def guarded_server() -> Any:
    """A real uvicorn server with the guarded protocol (20 connections, 0.3 s for headers), answering
    every request at once without reading its body."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    options = uvicorn_options(max_connections=20, header_timeout=0.3)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", **options)
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield port, options["http"].guard
    server.should_exit = True
    await serving


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

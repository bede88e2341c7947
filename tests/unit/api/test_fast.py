"""The short path of ``GET /jobs/{id}`` (api/fast.py) answers exactly as the route does, and hands on to the
application whatever it does not handle."""

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from orthanc_jobs.api.fast import JobServiceApp
from orthanc_jobs.api.http_server import uvicorn_options
from tests.unit.api.conftest import URL1, plugin, public, uvicorn_serving
from tests.unit.fake_orthanc import GOOD, FakeOrthanc

URL2 = "http://127.0.0.1:8002"
HEARTBEAT_PATH = "/orthanc-jobs/internal/heartbeat"
# Accepted, an unknown incarnation (register again), another server's incarnation, a wrong or missing
# secret, a body that is not JSON or too large.
HEARTBEATS = [
    (b'{"Incarnation": "inc-1", "OrthancVersion": "1.12.7"}', plugin(URL1), 200),
    (b'{"Incarnation": "inc-9"}', plugin(URL1), 404),
    (b'{"Incarnation": "inc-2"}', plugin(URL1), 403),
    (b'{"Incarnation": "inc-1"}', plugin(URL1, secret_of=URL2), 403),
    (b'{"Incarnation": "inc-1"}', {"X-Orthanc-Jobs-Server": URL1}, 401),
    (b"not json", plugin(URL1), 400),
    (b'{"Incarnation": "' + b"x" * 5000 + b'"}', plugin(URL1), 413),
]


async def _both_ways(
    service: httpx.AsyncClient, app: JobServiceApp, path: str, **headers: str
) -> tuple[httpx.Response, httpx.Response]:
    """The same request answered by the short path, then by the application's route alone."""
    short = await service.get(path, headers=headers)
    job_reads, app.job_reads = app.job_reads, None
    try:
        routed = await service.get(path, headers=headers)
    finally:
        app.job_reads = job_reads
    return short, routed


async def _both_posts(
    service: httpx.AsyncClient, app: JobServiceApp, path: str, body: bytes, headers: dict[str, str]
) -> tuple[httpx.Response, httpx.Response]:
    short = await service.post(path, content=body, headers=headers)
    heartbeats, app.heartbeats = app.heartbeats, None
    try:
        routed = await service.post(path, content=body, headers=headers)
    finally:
        app.heartbeats = heartbeats
    return short, routed


def _same(short: httpx.Response, routed: httpx.Response) -> None:
    assert short.status_code == routed.status_code
    assert short.content == routed.content
    assert sorted(short.headers.multi_items()) == sorted(routed.headers.multi_items())


async def test_a_job_an_unknown_job_and_refused_credentials_are_answered_as_by_the_route(
    service: httpx.AsyncClient, service_app: JobServiceApp, orthanc: FakeOrthanc
) -> None:
    known = orthanc.add_job(URL2, state="Success")
    short, routed = await _both_ways(service, service_app, f"/jobs/{known}", **public())
    _same(short, routed)
    assert short.json()["ID"] == known and short.json()["Server"]["Name"] == "orthanc-2"
    assert short.headers["content-security-policy"].endswith("sandbox")

    unknown = "00000000-0000-4000-8000-000000000000"
    short, routed = await _both_ways(service, service_app, f"/jobs/{unknown}", **public())
    _same(short, routed)
    assert (short.status_code, short.json()["OrthancStatus"]) == (404, 17)

    short, routed = await _both_ways(service, service_app, f"/jobs/{known}")  # no credentials
    _same(short, routed)
    assert short.status_code == 401 and short.headers["www-authenticate"] == 'Basic realm="Orthanc"'


async def test_what_the_short_path_does_not_handle_goes_to_the_application(
    service: httpx.AsyncClient, service_app: JobServiceApp, orthanc: FakeOrthanc
) -> None:
    job_id = orthanc.add_job(URL2, state="Success")
    # A body, even on a GET: the limits judge it (here: over the 4,096 bytes allowed).
    answer = await service.request("GET", f"/jobs/{job_id}", headers=public(), content=b"x" * 5000)
    assert answer.status_code == 413 and answer.json()["HttpStatus"] == 413
    # Not a job id: the route's own 404 (nothing looked up).
    answer = await service.get("/jobs/not-a-job-id-but-36-characters-long", headers=public())
    assert answer.status_code == 404
    # Over the bound on requests in progress: refused as every public route is.
    assert service_app.job_reads is not None
    requests = service_app.job_reads.requests
    requests.count = requests.maximum
    try:
        answer = await service.get(f"/jobs/{job_id}", headers=public())
    finally:
        requests.count = 0
    assert (answer.status_code, answer.headers["retry-after"]) == (503, "1")


async def test_the_lifespan_still_reaches_the_application(service_app: JobServiceApp) -> None:
    """Startup starts the poller and the housekeeping, shutdown stops them: the short path must not swallow
    either (uvicorn would run the service without them)."""
    sent: list[str] = []
    started = asyncio.Event()
    ready_while_running: list[bool] = []

    async def receive() -> dict[str, Any]:
        if not sent:
            return {"type": "lifespan.startup"}
        await started.wait()
        ready_while_running.append(service_app.state.ready)
        return {"type": "lifespan.shutdown"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])
        if message["type"] == "lifespan.startup.complete":
            started.set()

    async with asyncio.timeout(10):
        await service_app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert ready_while_running == [True] and not service_app.state.ready


async def test_heartbeats_are_answered_as_by_the_route(
    service: httpx.AsyncClient, service_app: JobServiceApp
) -> None:
    """Accepted, an unknown incarnation (register again), a wrong or missing secret, a body that is not
    JSON or too large: the same answers either way."""
    for body, headers, status in HEARTBEATS:
        short, routed = await _both_posts(service, service_app, HEARTBEAT_PATH, body, headers)
        _same(short, routed)
        assert short.status_code == status, (status, short.text)
        assert short.headers["x-frame-options"] == "DENY"


@pytest.fixture
async def served(service: httpx.AsyncClient, service_app: JobServiceApp) -> AsyncIterator[tuple[int, Any]]:
    """The application on a real uvicorn server, with the job reads and heartbeats answered at once by the
    protocol (api/http_server.py); also the calls of that path and what they answered."""
    answer = service_app.answer_at_once
    calls: list[bool] = []

    def counted(*arguments: Any) -> Any:
        result = answer(*arguments)
        calls.append(result is not None)
        return result

    options = uvicorn_options(max_connections=20, header_timeout=5, answer_at_once=counted)
    async with uvicorn_serving(service_app, options) as port:
        yield port, (options["http"].guard, calls)


async def _exchange(port: int, *requests: bytes, pipelined: bool = False) -> list[bytes]:
    """Send requests on one connection, each after the answer to the one before (or all at once:
    ``pipelined``); the answers, each without its Date header (it may differ)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if pipelined:
        writer.write(b"".join(requests))
    received = []
    for request in requests:
        if not pipelined:
            writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = int(re.search(rb"content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
        body = await asyncio.wait_for(reader.readexactly(length), 5)
        received.append(re.sub(rb"date: [^\r]*\r\n", b"", head) + body)
    writer.close()
    return received


def _get(path: str, authorization: str = GOOD, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: service\r\nAuthorization: {authorization}\r\n{extra}\r\n".encode()


async def test_a_job_read_answered_at_once_is_the_same_bytes_as_through_the_application(
    served: tuple[int, Any], orthanc: FakeOrthanc
) -> None:
    port, (guard, calls) = served
    known, other = orthanc.add_job(URL2, state="Success"), orthanc.add_job(URL1, state="Success")
    read = _get(f"/jobs/{known}")
    # The first read asks the servers about the credentials (through the application); the next ones are
    # answered at once.
    first, second, third = await _exchange(port, read, read, read)
    assert calls == [False, True, True]
    assert first == second == third
    assert b'"ID":"' + known.encode() in first and first.startswith(b"HTTP/1.1 200 OK\r\n")

    answer, guard.answer_at_once = guard.answer_at_once, None
    try:
        [through_application] = await _exchange(port, read)
    finally:
        guard.answer_at_once = answer
    assert through_application == first

    # Pipelined: the ones behind a request still being answered wait for their turn, in order.
    answers = await _exchange(port, _get("/jobs"), read, _get(f"/jobs/{other}"), read, pipelined=True)
    assert [answer.split(b" ", 2)[1] for answer in answers] == [b"200"] * 4
    assert answers[1] == answers[3] == first and b'"ID":"' + other.encode() in answers[2]


async def test_what_needs_the_application_is_not_answered_at_once(
    served: tuple[int, Any], orthanc: FakeOrthanc
) -> None:
    port, (_, calls) = served
    known = orthanc.add_job(URL2, state="Success")
    unknown = "00000000-0000-4000-8000-000000000000"
    [answered] = await _exchange(port, _get(f"/jobs/{known}"))  # the credentials are accepted, and cached
    calls.clear()
    answers = await _exchange(
        port,
        _get(f"/jobs/{unknown}"),  # asked of the servers: 404
        _get(f"/jobs/{known}", authorization="Basic d3Jvbmc6d3Jvbmc="),  # credentials never seen
        _get(f"/jobs/{known}", extra="Content-Length: 2\r\n") + b"{}",  # a body: the limits judge it
        _get(f"/jobs/{known}?x=1"),  # a query string
        _get(f"/jobs/{known}"),  # and after all of them, at once again
    )
    assert [answer.split(b" ", 2)[1] for answer in answers] == [b"404", b"401", b"200", b"200", b"200"]
    assert b"OrthancStatus" in answers[0] and b"OrthancStatus" in answers[1]
    assert answers[2] == answers[3] == answers[4] == answered
    assert calls == [False, False, False, False, True]

    # A client that closes after its answer, and HTTP/1.0: through the application, which closes.
    for request in (
        _get(f"/jobs/{known}", extra="Connection: close\r\n"),
        f"GET /jobs/{known} HTTP/1.0\r\nAuthorization: {GOOD}\r\n\r\n".encode(),
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200 OK")
        writer.close()
    assert calls.count(True) == 1


def _post(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    head = f"POST {path} HTTP/1.1\r\nHost: service\r\nContent-Length: {len(body)}\r\n{lines}\r\n"
    return head.encode() + body


async def test_a_heartbeat_answered_at_once_is_the_same_bytes_as_through_the_application(
    served: tuple[int, Any],
) -> None:
    """Sent whole (as the plugin sends it), an accepted heartbeat is answered by the protocol; the others,
    and one whose body comes in a second write, by the application: the same bytes either way."""
    port, (guard, calls) = served
    for body, headers, status in HEARTBEATS:
        request = _post(HEARTBEAT_PATH, body, headers)
        calls.clear()
        [at_once] = await _exchange(port, request)
        assert at_once.split(b" ", 2)[1] == str(status).encode()
        assert calls == [status == 200]
        answer, guard.answer_at_once = guard.answer_at_once, None
        try:
            [through_application] = await _exchange(port, request)
        finally:
            guard.answer_at_once = answer
        assert at_once == through_application, status

    # The body in a second write: not at hand when the headers are in.
    body, headers, _ = HEARTBEATS[0]
    request = _post(HEARTBEAT_PATH, body, headers)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    calls.clear()
    writer.write(request[: -len(body)])
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(request[-len(body) :])
    answer = await asyncio.wait_for(reader.readuntil(b'{"Status":"ok"}'), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 OK") and calls == [False]


def _flood_without_reading(port: int, request: bytes, count: int) -> tuple[socket.socket, int]:
    """Send ``count`` copies of ``request`` on one connection and read nothing, until the server stops
    reading (no byte taken for a second) or all are sent: the socket and the bytes sent."""
    connection = socket.create_connection(("127.0.0.1", port))
    connection.setblocking(False)
    data, sent, stalled_since = memoryview(request * count), 0, time.monotonic()
    while sent < len(data) and time.monotonic() - stalled_since < 1.0:
        try:
            sent += connection.send(data[sent : sent + 65536])
            stalled_since = time.monotonic()
        except BlockingIOError:
            time.sleep(0.01)
    return connection, sent


def _read_answers(connection: socket.socket, count: int, rest: bytes) -> list[bytes]:
    """Read ``count`` answers (their status lines), then send ``rest`` (what is left of the last request,
    which the server reads once it can write again) and read its answer."""
    connection.setblocking(True)
    connection.settimeout(10)
    received, answers = b"", []
    while len(answers) < count + bool(rest):
        if len(answers) == count:
            connection.sendall(rest)
            rest = b""
            count += 1
        chunk = connection.recv(1 << 20)
        assert chunk, f"closed after {len(answers)} answers"
        received += chunk
        while (end := received.find(b"\r\n\r\n")) >= 0:
            head = received[:end]
            length = int(re.search(rb"content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
            if len(received) < end + 4 + length:
                break
            answers.append(head.split(b"\r\n", 1)[0])
            received = received[end + 4 + length :]
    return answers


async def test_a_client_that_does_not_read_its_answers_is_not_answered_into_memory(
    served: tuple[int, Any], orthanc: FakeOrthanc
) -> None:
    """Job reads pipelined by a client that reads nothing: once the connection's write buffer is full,
    the server stops answering at once (the application waits for the client, and uvicorn stops reading);
    the answers never pile up in memory, and all of them come, in order, when the client reads."""
    port, (guard, calls) = served
    known = orthanc.add_job(URL1, state="Success")
    await _exchange(port, _get(f"/jobs/{known}"))  # the credentials accepted: the next reads at once
    protocols: list[Any] = []
    opened = guard.opened
    guard.opened = lambda protocol: protocols.append(protocol) or opened(protocol)
    request = _get(f"/jobs/{known}", extra=f"X-Padding: {'p' * 1000}\r\n")
    count = 40_000  # 44 MB of requests: more than the kernel's buffers hold
    connection, sent = await asyncio.to_thread(_flood_without_reading, port, request, count)
    try:
        [protocol] = protocols
        buffered = protocol.transport.get_write_buffer_size()
        assert buffered < 256 * 1024, f"{buffered} bytes of answers held in memory"
        assert sent < len(request) * count, "the server read every request although nothing was read"
        complete, partial = divmod(sent, len(request))
        rest = request[partial:] if partial else b""
        answers = await asyncio.to_thread(_read_answers, connection, complete, rest)
    finally:
        connection.close()
    assert answers == [b"HTTP/1.1 200 OK"] * (complete + bool(partial))
    assert calls.count(True) > 1000  # most were answered at once, while the client read

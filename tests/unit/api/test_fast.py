"""The short path of ``GET /jobs/{id}`` (api/fast.py) answers exactly as the route does, and hands on to the
application whatever it does not handle."""

import asyncio
from typing import Any

import httpx

from orthanc_jobs.api.fast import JobServiceApp
from tests.unit.api.conftest import URL1, plugin, public
from tests.unit.fake_orthanc import FakeOrthanc

URL2 = "http://127.0.0.1:8002"


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
    path = "/orthanc-jobs/internal/heartbeat"
    cases = [
        (b'{"Incarnation": "inc-1", "OrthancVersion": "1.12.7"}', plugin(URL1), 200),
        (b'{"Incarnation": "inc-9"}', plugin(URL1), 404),
        (b'{"Incarnation": "inc-2"}', plugin(URL1), 403),  # another server's incarnation
        (b'{"Incarnation": "inc-1"}', plugin(URL1, secret_of=URL2), 403),
        (b'{"Incarnation": "inc-1"}', {"X-Orthanc-Jobs-Server": URL1}, 401),
        (b"not json", plugin(URL1), 400),
        (b'{"Incarnation": "' + b"x" * 5000 + b'"}', plugin(URL1), 413),
    ]
    for body, headers, status in cases:
        short, routed = await _both_posts(service, service_app, path, body, headers)
        _same(short, routed)
        assert short.status_code == status, (status, short.text)
        assert short.headers["x-frame-options"] == "DENY"

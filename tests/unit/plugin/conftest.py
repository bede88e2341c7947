"""Fixtures of the reporter plugin's tests: a clock the test drives, job-service stand-ins, Reporters."""

import json
import uuid

import pytest

from tests.unit.plugin.stubs import (
    ORTHANC_VERSION,
    SECRET,
    FakeClock,
    Harness,
    RawServer,
    ServiceStub,
    job_json,
    plugin,
)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def clock():
    """The test's clock: the Reporters it makes wait on it, the stand-ins record their requests' times."""
    return FakeClock()


@pytest.fixture
def servers(clock):
    """Starts job-service stand-ins; stops them all at the end."""
    started: list[ServiceStub | RawServer] = []

    class Factory:
        @staticmethod
        def stub(port: int = 0, secret: str = SECRET) -> ServiceStub:
            server = ServiceStub(clock, port, secret)
            started.append(server)
            return server

        @staticmethod
        def raw(port: int = 0, reply: bytes | None = None) -> RawServer:
            server = RawServer(port, reply)
            started.append(server)
            return server

    yield Factory
    for server in started:
        server.stop()


@pytest.fixture
def make_reporter(clock):
    """Builds Reporters with a recording read_local (this Orthanc, over HTTP) and logs, on the test's clock
    unless given another (``clock=plugin.SystemClock()`` for what real time must show); stops them."""
    made: list[Harness] = []

    def make(
        url: str | list[str],
        *,
        secret: str = SECRET,
        heartbeat_interval: float = 1.0,
        queue_size: int = 10000,
        timeout: float = 0.5,
        missing_jobs: tuple[str, ...] = (),
        read_local=None,
        start: bool = True,
        queue_bytes: int = 64 * 1024 * 1024,
        clock=clock,
    ) -> Harness:
        identity = {
            "Name": "orthanc-a",
            "Url": "http://10.0.0.5:8042",
            "Incarnation": str(uuid.uuid4()),
            "Token": "Bearer orthanc-token",
            "OrthancVersion": "",
        }
        harness = Harness(reporter=None, identity=dict(identity), clock=clock)

        def default_read_local(uri):
            harness.local_reads.append(uri)
            if uri == "/system":
                return json.dumps({"Version": ORTHANC_VERSION, "Name": "orthanc-a"}).encode()
            if uri.startswith("/jobs/") and uri.removeprefix("/jobs/") not in missing_jobs:
                return json.dumps(job_json(uri)).encode()
            return None

        harness.reporter = plugin.Reporter(
            url,
            secret,
            identity,
            read_local or default_read_local,
            harness.logs.append,
            heartbeat_interval,
            queue_size,
            timeout,
            queue_bytes,
            harness.errors.append,
            clock=clock,
        )
        if isinstance(clock, FakeClock):
            harness.reporter.queued = clock.condition(harness.reporter.lock)
        made.append(harness)
        if start:
            harness.reporter.start()
        return harness

    yield make
    if isinstance(clock, FakeClock):
        clock.release()
    for harness in made:
        harness.reporter.stop(budget=0.2)


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("ORTHANC_JOBS_URL", "ORTHANC_JOBS_SECRET", "ORTHANC_JOBS_SERVER_URL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch

"""Unit tests for the reporter plugin (src/orthanc_jobs/plugin/orthanc_jobs_reporter.py).

The plugin is a standalone standard-library script, so it is loaded from its path. The job-service is played
by real servers on 127.0.0.1 (no mocking of urllib): a recording HTTP stub that knows registered incarnations
and answers 404 for unknown ones, a socket server that accepts and never answers, one that answers garbage,
and a free port with nothing listening.
"""

import collections
import importlib.util
import itertools
import json
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from orthanc_jobs.cluster.launcher import free_port

PLUGIN_PATH = (
    Path(__file__).resolve().parents[2] / "src" / "orthanc_jobs" / "plugin" / "orthanc_jobs_reporter.py"
)
PREFIX = "/orthanc-jobs/internal"
SECRET = "s3cret"
ORTHANC_VERSION = "1.12.4"
ORTHANC_STOPPED = 11
JOB_SUBMITTED, JOB_SUCCESS, JOB_FAILURE = 16, 17, 18


def load_plugin(name: str = "orthanc_jobs_reporter_under_test"):
    spec = importlib.util.spec_from_file_location(name, PLUGIN_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


plugin = load_plugin()


def wait_until(predicate, timeout: float = 3.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


# ---- the job-service stand-ins ----


@dataclass
class Received:
    path: str
    route: str
    authorization: str | None
    server: str | None  # X-Orthanc-Jobs-Server: whose secret the plugin presents
    content_type: str | None
    body: Any
    status: int


class ServiceStub:
    """A real HTTP job-service stand-in that records what it receives.

    ``/register`` makes the incarnation known; ``/heartbeat`` and ``/events`` for an unknown incarnation get
    404, like the real service after a restart. ``plan(route, status, ...)`` forces the next answers of a
    route; a wrong ``Authorization`` gets 403.
    """

    def __init__(self, port: int = 0, secret: str = SECRET):
        self.secret = secret
        self.lock = threading.Lock()
        self.requests: list[Received] = []
        self.known: set[str] = set()
        self.planned: dict[str, collections.deque[int]] = collections.defaultdict(collections.deque)
        #: ``refuse(route, body)`` may return a status to answer instead (e.g. 413 for large batches).
        self.refuse: Callable[[str, Any], int | None] | None = None
        #: ``reply(route, body)`` gives the body of a 200 answer (default: ``{}``).
        self.reply: Callable[[str, Any], bytes] | None = None
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()
        self.stopped = False

    def _handler_class(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                body = json.loads(raw) if raw else None
                authorization = self.headers.get("Authorization")
                route = self.path[len(PREFIX) :] if self.path.startswith(PREFIX) else self.path
                status = stub._answer(route, authorization, body)
                with stub.lock:  # recorded before answering: once the reporter has its answer, it is here
                    stub.requests.append(
                        Received(
                            self.path,
                            route,
                            authorization,
                            self.headers.get("X-Orthanc-Jobs-Server"),
                            self.headers.get("Content-Type"),
                            body,
                            status,
                        )
                    )
                data = stub.reply(route, body) if stub.reply is not None and status == 200 else b"{}"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format, *args):
                pass

        return Handler

    def _answer(self, route: str, authorization: str | None, body: Any) -> int:
        with self.lock:
            if authorization != "Bearer " + self.secret:
                return 403
            if self.refuse is not None and (status := self.refuse(route, body)):
                return status
            if self.planned[route]:
                return self.planned[route].popleft()
            if route == "/register":
                self.known.add(body["Incarnation"])
                return 200
            if route in ("/heartbeat", "/events"):
                return 200 if body.get("Incarnation") in self.known else 404
            return 404

    def plan(self, route: str, *statuses: int) -> None:
        with self.lock:
            self.planned[route].extend(statuses)

    def forget(self) -> None:
        """Forget every incarnation, as a restarted job-service does."""
        with self.lock:
            self.known.clear()

    def received(self, route: str | None = None, status: int | None = None) -> list[Received]:
        with self.lock:
            return [
                r
                for r in self.requests
                if (route is None or r.route == route) and (status is None or r.status == status)
            ]

    def delivered(self) -> list[dict]:
        """The events of the /events requests that were accepted, in order, less their emission time
        (checked here: a job event carries when Orthanc emitted it)."""
        events = [dict(event) for r in self.received("/events", 200) for event in r.body["Events"]]
        for event in events:
            if event["Type"] != "ORTHANC_STOPPED":
                assert abs(time.time() - event.pop("Time")) < 60
        return events

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(2)


class RawServer:
    """A TCP server that accepts connections and either never answers or answers ``reply`` and closes."""

    def __init__(self, port: int = 0, reply: bytes | None = None):
        self.reply = reply
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.sock.settimeout(0.02)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections: list[socket.socket] = []
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.closing.is_set():
            try:
                connection, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections.append(connection)
            if self.reply is not None:
                connection.settimeout(1)
                try:
                    connection.recv(65536)
                    connection.sendall(self.reply)
                except OSError:
                    pass
                connection.close()

    def stop(self):
        self.closing.set()
        self.thread.join(2)
        for connection in self.connections:
            connection.close()
        self.sock.close()


# ---- fixtures ----


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def servers():
    """Starts job-service stand-ins; stops them all at the end."""
    started: list[ServiceStub | RawServer] = []

    class Factory:
        @staticmethod
        def stub(port: int = 0, secret: str = SECRET) -> ServiceStub:
            server = ServiceStub(port, secret)
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


def job_json(uri: str) -> dict:
    return {"ID": uri.removeprefix("/jobs/"), "State": "Success", "Type": "DicomModalityStore"}


@dataclass
class Harness:
    reporter: Any
    identity: dict
    logs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    local_reads: list[str] = field(default_factory=list)

    def logged(self, text: str) -> bool:
        return any(text in line for line in list(self.logs) + list(self.errors))

    def logged_error(self, text: str) -> bool:
        return any(text in line for line in list(self.errors))


@pytest.fixture
def make_reporter():
    """Builds Reporters with a recording read_local (this Orthanc, over HTTP) and logs; stops them."""
    made: list[Harness] = []

    def make(
        url: str,
        *,
        secret: str = SECRET,
        heartbeat_interval: float = 0.05,
        queue_size: int = 10000,
        timeout: float = 0.5,
        missing_jobs: tuple[str, ...] = (),
        read_local=None,
        start: bool = True,
        queue_bytes: int = 64 * 1024 * 1024,
    ) -> Harness:
        identity = {
            "Name": "orthanc-a",
            "Url": "http://10.0.0.5:8042",
            "Incarnation": str(uuid.uuid4()),
            "Token": "Bearer orthanc-token",
            "OrthancVersion": "",
        }
        harness = Harness(reporter=None, identity=dict(identity))

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
        )
        made.append(harness)
        if start:
            harness.reporter.start()
        return harness

    yield make
    for harness in made:
        harness.reporter.stop(budget=0.2)


@pytest.fixture
def short_backoff(monkeypatch):
    """Caps the retry backoff so that recoveries happen within a test's few seconds."""
    monkeypatch.setattr(plugin, "MAX_BACKOFF", 0.2)


def refusing(status: int, bad: Callable[[dict], bool]) -> Callable[[str, Any], int | None]:
    """A stand-in's ``refuse``: ``status`` for the /events batches that hold an event ``bad`` picks."""

    def refuse(route: str, body: Any) -> int | None:
        events = (body or {}).get("Events", []) if isinstance(body, dict) else []
        return status if route == "/events" and any(bad(event) for event in events) else None

    return refuse


def job_ids(events: list[dict]) -> list[str]:
    return [event.get("JobId") for event in events]


# ---- loading outside Orthanc ----


def test_importing_outside_orthanc_starts_nothing():
    module = load_plugin("orthanc_jobs_reporter_plain_import")
    assert module._reporter is None
    module.on_change(JOB_SUBMITTED, 0, "job-1")  # a no-op, not an error
    module.on_change(ORTHANC_STOPPED, 4, "")


# ---- registration, events, heartbeats ----


def test_registers_at_start_with_identity_and_secret(servers, make_reporter):
    stub = servers.stub()
    harness = make_reporter(stub.url + "/")  # a trailing slash in the configured URL is harmless

    assert wait_until(lambda: stub.received("/register"))
    register = stub.received("/register")[0]
    assert register.path == PREFIX + "/register"
    assert register.status == 200
    assert register.authorization == "Bearer " + SECRET
    assert register.content_type == "application/json"
    # The identity as given, with Orthanc's version read from its own REST API.
    assert register.body == {**harness.identity, "OrthancVersion": ORTHANC_VERSION}
    assert "/system" in harness.local_reads
    assert wait_until(lambda: harness.logged("registered with the job-service"))
    time.sleep(0.2)
    assert len(stub.received("/register")) == 1  # once, not at every heartbeat
    assert all(r.authorization == "Bearer " + SECRET for r in stub.received())
    # Every request names the server whose secret it carries.
    assert all(r.server == harness.identity["Url"] for r in stub.received())


def test_known_orthanc_version_is_not_asked_again(servers, make_reporter):
    stub = servers.stub()
    harness = make_reporter(stub.url, start=False)
    harness.reporter.identity["OrthancVersion"] = "1.11.0"
    harness.reporter.start()

    assert wait_until(lambda: stub.received("/register"))
    assert stub.received("/register")[0].body["OrthancVersion"] == "1.11.0"
    assert "/system" not in harness.local_reads


def test_job_events_are_sent_in_order_in_batches_with_the_job_json(servers, make_reporter):
    stub = servers.stub()
    harness = make_reporter(stub.url)
    types = [JOB_SUBMITTED, JOB_SUCCESS, JOB_FAILURE]
    count = 2 * plugin.BATCH_SIZE + 200

    for i in range(count):
        harness.reporter.on_change(types[i % 3], 0, f"job-{i}")

    assert wait_until(lambda: len(stub.delivered()) >= count)
    delivered = stub.delivered()
    names = {JOB_SUBMITTED: "JOB_SUBMITTED", JOB_SUCCESS: "JOB_SUCCESS", JOB_FAILURE: "JOB_FAILURE"}
    assert delivered == [
        {"Type": names[types[i % 3]], "JobId": f"job-{i}", "Job": job_json(f"/jobs/job-{i}")}
        for i in range(count)
    ]
    batches = stub.received("/events", 200)
    assert len(batches) >= 3
    assert all(0 < len(r.body["Events"]) <= plugin.BATCH_SIZE for r in batches)
    assert all(r.body["Incarnation"] == harness.identity["Incarnation"] for r in batches)
    assert [uri for uri in harness.local_reads if uri.startswith("/jobs/")] == [
        f"/jobs/job-{i}" for i in range(count)
    ]


def test_an_event_whose_job_cannot_be_read_is_sent_without_it(servers, make_reporter):
    stub = servers.stub()
    harness = make_reporter(stub.url, missing_jobs=("gone",))

    harness.reporter.on_change(JOB_SUCCESS, 0, "gone")
    harness.reporter.on_change(JOB_SUCCESS, 0, "here")

    assert wait_until(lambda: len(stub.delivered()) >= 2)
    assert stub.delivered() == [
        {"Type": "JOB_SUCCESS", "JobId": "gone"},
        {"Type": "JOB_SUCCESS", "JobId": "here", "Job": job_json("/jobs/here")},
    ]


def test_changes_other_than_jobs_are_ignored(servers, make_reporter):
    stub = servers.stub()
    harness = make_reporter(stub.url)
    assert wait_until(lambda: stub.received("/register"))

    for change_type in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 14, 15, 19, 20, 21):
        harness.reporter.on_change(change_type, 1, f"resource-{change_type}")
    harness.reporter.on_change(JOB_FAILURE, 0, "job-1")

    assert wait_until(lambda: stub.delivered())
    time.sleep(0.2)
    assert stub.delivered() == [{"Type": "JOB_FAILURE", "JobId": "job-1", "Job": job_json("/jobs/job-1")}]
    assert [uri for uri in harness.local_reads if uri != "/system"] == ["/jobs/job-1"]
    assert not harness.reporter.queue


def test_orthanc_stopped_change_sends_orthanc_stopped(servers, make_reporter):
    stub = servers.stub()
    harness = make_reporter(stub.url)
    assert wait_until(lambda: stub.received("/register"))

    harness.reporter.on_change(ORTHANC_STOPPED, 4, "")

    # Delivered before on_change returned, and the reporter is done.
    assert stub.delivered() == [{"Type": "ORTHANC_STOPPED"}]
    assert not harness.reporter.thread.is_alive()
    harness.reporter.on_change(JOB_SUBMITTED, 0, "job-late")  # after the stop: ignored, no error
    harness.reporter.on_change(ORTHANC_STOPPED, 4, "")
    time.sleep(0.1)
    assert stub.delivered() == [{"Type": "ORTHANC_STOPPED"}]


def test_heartbeats_keep_coming(servers, make_reporter):
    stub = servers.stub()
    harness = make_reporter(stub.url, heartbeat_interval=0.05)
    assert wait_until(lambda: stub.received("/register"))

    time.sleep(0.6)
    heartbeats = stub.received("/heartbeat")
    # About 12 at one per 0.05 s: they keep coming, and they are paced by the interval.
    assert 4 <= len(heartbeats) <= 16
    assert all(r.status == 200 for r in heartbeats)
    assert all(
        r.body == {"Incarnation": harness.identity["Incarnation"], "OrthancVersion": ORTHANC_VERSION}
        for r in heartbeats
    )
    assert all(r.authorization == "Bearer " + SECRET for r in heartbeats)
    count = len(heartbeats)
    assert wait_until(lambda: len(stub.received("/heartbeat")) >= count + 3, timeout=1)


def test_heartbeat_404_makes_the_reporter_register_again(servers, make_reporter):
    stub = servers.stub()
    harness = make_reporter(stub.url, heartbeat_interval=0.05)
    assert wait_until(lambda: stub.received("/heartbeat", 200))

    stub.forget()  # the job-service restarted: it no longer knows this incarnation

    assert wait_until(lambda: len(stub.received("/register")) == 2)
    assert stub.received("/heartbeat", 404)
    registers = stub.received("/register")
    assert registers[1].body["Incarnation"] == harness.identity["Incarnation"]
    count = len(stub.received("/heartbeat", 200))
    assert wait_until(lambda: len(stub.received("/heartbeat", 200)) >= count + 3, timeout=1)
    assert len(stub.received("/register")) == 2


def test_events_404_makes_the_reporter_register_again_and_resend(servers, make_reporter):
    stub = servers.stub()
    # No heartbeat in the test's time: the 404 comes on /events.
    harness = make_reporter(stub.url, heartbeat_interval=30)
    assert wait_until(lambda: stub.received("/register"))

    stub.forget()
    for i in range(5):
        harness.reporter.on_change(JOB_SUBMITTED, 0, f"job-{i}")

    assert wait_until(lambda: len(stub.delivered()) >= 5)
    assert job_ids(stub.delivered()) == [f"job-{i}" for i in range(5)]
    assert [(r.route, r.status) for r in stub.received()] == [
        ("/register", 200),
        ("/events", 404),
        ("/register", 200),
        ("/events", 200),
    ]
    refused, accepted = stub.received("/events")
    assert refused.body == accepted.body
    assert not stub.received("/heartbeat")


def test_events_are_not_lost_when_registering_again_fails(servers, make_reporter, short_backoff):
    stub = servers.stub()
    harness = make_reporter(stub.url, heartbeat_interval=30)
    assert wait_until(lambda: stub.received("/register"))

    stub.forget()
    stub.plan("/register", 500)  # the re-registration fails once
    for i in range(5):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")

    assert wait_until(lambda: len(stub.delivered()) >= 5)
    time.sleep(0.1)
    assert job_ids(stub.delivered()) == [f"job-{i}" for i in range(5)]
    assert [r.status for r in stub.received("/register")] == [200, 500, 200]
    assert harness.logged("cannot reach the job-service")


def test_events_500_are_retried(servers, make_reporter, short_backoff):
    stub = servers.stub()
    harness = make_reporter(stub.url, heartbeat_interval=30)
    assert wait_until(lambda: stub.received("/register"))

    stub.plan("/events", 500, 500)
    for i in range(3):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")

    assert wait_until(lambda: len(stub.delivered()) >= 3)
    time.sleep(0.1)
    assert job_ids(stub.delivered()) == ["job-0", "job-1", "job-2"]
    assert [r.status for r in stub.received("/events")] == [500, 500, 200]


# ---- the job-service unreachable ----


def test_service_down_on_change_never_blocks_queue_drops_oldest_then_delivers(
    servers, make_reporter, short_backoff
):
    port = free_port()
    harness = make_reporter(f"http://127.0.0.1:{port}", queue_size=100, timeout=2.0)
    reporter = harness.reporter
    time.sleep(0.05)  # the sender thread has met the refused connection

    started = time.monotonic()
    for i in range(1000):
        reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")
    elapsed = time.monotonic() - started

    # Far below one request to the unreachable service (its 2 s time-out): no call waited for it.
    assert elapsed < 1.0, f"1000 on_change calls took {elapsed:.3f} s"
    assert wait_until(lambda: reporter.dropped == 900 and not reporter.captures)
    assert len(reporter.queue) == 100
    # Jobs are read as their events come, but 1000 in a burst outrun the reads: those read too late to be
    # worth it go without JSON, counted.
    without_json = [event for event in reporter.queue if "Job" not in event]
    assert reporter.outbox.dropped_json == len(without_json) < 100
    assert job_ids(list(reporter.queue)) == [f"job-{i}" for i in range(900, 1000)]  # the newest kept
    assert harness.logged("dropped")
    assert harness.logged("cannot reach the job-service")
    assert reporter.thread.is_alive()

    stub = servers.stub(port)  # the job-service comes back on the same port

    assert wait_until(lambda: len(stub.delivered()) >= 100)
    time.sleep(0.1)
    assert stub.received("/register", 200)
    assert job_ids(stub.delivered()) == [f"job-{i}" for i in range(900, 1000)]
    assert all(
        event.get("Job", job_json(f"/jobs/{event['JobId']}")) == job_json(f"/jobs/{event['JobId']}")
        for event in stub.delivered()
    )


def test_events_in_flight_when_the_service_goes_down_are_kept_or_dropped_oldest_first(
    servers, make_reporter, short_backoff
):
    stub = servers.stub()
    port = stub.port
    harness = make_reporter(stub.url, heartbeat_interval=30, queue_size=100, timeout=1.0)
    reporter = harness.reporter
    assert wait_until(lambda: stub.received("/register"))
    stub.stop()
    silent = servers.raw(port)  # the job-service now accepts connections and never answers

    reporter.on_change(JOB_SUBMITTED, 0, "job-0")
    assert wait_until(lambda: silent.connections)  # job-0 is out of the queue, being sent
    for i in range(1, 101):
        reporter.on_change(JOB_SUBMITTED, 0, f"job-{i}")  # fills the queue, nothing dropped yet
    assert wait_until(lambda: len(reporter.queue) == 100 and not reporter.captures)
    assert reporter.dropped == 0

    # job-0's send times out: it comes back to a full queue, in front, and is the one dropped.
    assert wait_until(lambda: reporter.dropped == 1)
    assert wait_until(lambda: harness.logged("dropped"), timeout=1), harness.logs
    assert job_ids(reporter.queue) == [f"job-{i}" for i in range(1, 101)]

    silent.stop()
    stub = servers.stub(port)
    assert wait_until(lambda: len(stub.delivered()) >= 100)
    time.sleep(0.1)
    assert job_ids(stub.delivered()) == [f"job-{i}" for i in range(1, 101)]


# ---- shutdown ----


def stop_by(reporter, how: str) -> float:
    started = time.monotonic()
    if how == "stop":
        reporter.stop()
    else:
        reporter.on_change(ORTHANC_STOPPED, 4, "")
    return time.monotonic() - started


@pytest.mark.parametrize("how", ["stop", "on_change"])
def test_stop_is_quick_when_the_service_refuses_connections(make_reporter, how):
    harness = make_reporter(f"http://127.0.0.1:{free_port()}", timeout=2.0)
    for i in range(10):
        harness.reporter.on_change(JOB_SUBMITTED, 0, f"job-{i}")
    time.sleep(0.1)

    elapsed = stop_by(harness.reporter, how)

    assert elapsed < 1.0, f"stop took {elapsed:.3f} s"
    assert not harness.reporter.thread.is_alive()


@pytest.mark.parametrize("how", ["stop", "on_change"])
def test_stop_is_quick_when_the_service_never_answers(servers, make_reporter, how):
    silent = servers.raw()
    harness = make_reporter(silent.url, timeout=5.0)
    assert wait_until(lambda: silent.connections)  # the registration is hanging
    for i in range(10):
        harness.reporter.on_change(JOB_SUBMITTED, 0, f"job-{i}")

    elapsed = stop_by(harness.reporter, how)

    assert elapsed < 1.0, f"stop took {elapsed:.3f} s"


def test_stop_limits_its_requests_to_the_shutdown_budget(servers, make_reporter):
    stub = servers.stub()
    port = stub.port
    harness = make_reporter(stub.url, heartbeat_interval=30, timeout=5.0)
    assert wait_until(lambda: stub.received("/register"))
    stub.stop()
    silent = servers.raw(port)  # now the job-service accepts connections and never answers
    for i in range(10):
        harness.reporter.on_change(JOB_SUBMITTED, 0, f"job-{i}")

    elapsed = stop_by(harness.reporter, "stop")

    assert elapsed < 1.0, f"stop took {elapsed:.3f} s"
    assert silent.connections
    # The last request was given the budget's time, not the 5 s timeout: the sender ends with it.
    assert wait_until(lambda: not harness.reporter.thread.is_alive(), timeout=0.5)


@pytest.mark.parametrize("how", ["stop", "on_change"])
def test_stop_delivers_pending_events_and_orthanc_stopped_before_returning(servers, make_reporter, how):
    stub = servers.stub()
    harness = make_reporter(stub.url, heartbeat_interval=30)
    assert wait_until(lambda: stub.received("/register"))
    for i in range(50):
        harness.reporter.on_change(JOB_SUBMITTED, 0, f"job-{i}")

    elapsed = stop_by(harness.reporter, how)

    assert elapsed < 1.0
    delivered = stub.delivered()
    assert job_ids(delivered) == [f"job-{i}" for i in range(50)] + [None]
    assert delivered[-1] == {"Type": "ORTHANC_STOPPED"}
    assert not harness.reporter.thread.is_alive()


def test_stop_right_after_start_still_delivers(servers, make_reporter):
    stub = servers.stub()
    harness = make_reporter(stub.url, start=False)
    harness.reporter.on_change(JOB_SUBMITTED, 0, "job-0")
    harness.reporter.start()

    elapsed = stop_by(harness.reporter, "stop")

    assert elapsed < 1.0
    assert job_ids(stub.delivered()) == ["job-0", None]
    assert stub.delivered()[-1] == {"Type": "ORTHANC_STOPPED"}


# ---- errors that must not stop the reporter ----


def test_wrong_secret_is_retried_with_backoff_without_crashing(servers, make_reporter, monkeypatch):
    monkeypatch.setattr(plugin, "MAX_BACKOFF", 0.4)
    stub = servers.stub(secret="the-right-one")
    harness = make_reporter(stub.url, secret="a-wrong-one", heartbeat_interval=0.05)

    # Orthanc goes on producing events meanwhile; they must not turn the backoff into a busy retry.
    for i in range(100):
        harness.reporter.on_change(JOB_SUBMITTED, 0, f"job-{i}")
        time.sleep(0.01)
    time.sleep(0.2)

    attempts = stub.received()
    assert attempts, "the reporter never tried"
    assert all(r.route == "/register" and r.status == 403 for r in attempts)
    assert all(r.authorization == "Bearer a-wrong-one" for r in attempts)
    # Backoff 0.2, 0.4, 0.4, ... over about 1.5 s: a handful of attempts, not one per event.
    assert 2 <= len(attempts) <= 8, len(attempts)
    assert harness.reporter.thread.is_alive()
    assert harness.logged("403")
    assert len(harness.reporter.queue) == 100

    stub.secret = "a-wrong-one"  # the job-service is reconfigured: the reporter gets through
    assert wait_until(lambda: len(stub.delivered()) >= 100)
    assert job_ids(stub.delivered()) == [f"job-{i}" for i in range(100)]


@pytest.mark.parametrize(
    "reply",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}",  # the connection closes mid-body
    ],
    ids=["bad-status-line", "incomplete-body"],
)
def test_malformed_answers_do_not_kill_the_sender(servers, make_reporter, reply):
    garbage = servers.raw(reply=reply)
    harness = make_reporter(garbage.url)

    assert wait_until(lambda: len(garbage.connections) >= 2)
    assert harness.reporter.thread.is_alive()
    assert harness.logged("cannot reach the job-service")


# ---- settings ----


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("ORTHANC_JOBS_URL", "ORTHANC_JOBS_SECRET", "ORTHANC_JOBS_SERVER_URL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_settings_defaults(clean_env):
    assert plugin._settings({}) == {
        "Url": "http://127.0.0.1:8050",
        "Secret": "",
        "ServerUrl": "http://127.0.0.1:8042",
        "HeartbeatInterval": 2.0,
        "QueueSize": 10000,
        "Timeout": 2.0,
        "LocalUrl": "http://127.0.0.1:8042",
        "QueueBytes": 64 * 1024 * 1024,
    }


def test_settings_from_the_orthancjobs_section(clean_env):
    configuration = {
        "HttpPort": 9042,
        "OrthancJobs": {
            "Url": "http://jobs:8050",
            "Secret": "from-config",
            "ServerUrl": "http://10.0.0.5:8042",
            "HeartbeatInterval": "0.5",
            "QueueSize": "20",
            "QueueBytes": 1000,
            "Timeout": 3,
        },
    }
    assert plugin._settings(configuration) == {
        "Url": "http://jobs:8050",
        "Secret": "from-config",
        "ServerUrl": "http://10.0.0.5:8042",
        "HeartbeatInterval": 0.5,
        "QueueSize": 20,
        "Timeout": 3.0,
        "LocalUrl": "http://127.0.0.1:9042",
        "QueueBytes": 1000,
    }


def test_environment_overrides_the_section(clean_env):
    clean_env.setenv("ORTHANC_JOBS_URL", "http://env-jobs:9000")
    clean_env.setenv("ORTHANC_JOBS_SECRET", "from-env")
    clean_env.setenv("ORTHANC_JOBS_SERVER_URL", "https://orthanc-1.example:8443")
    configuration = {
        "OrthancJobs": {"Url": "http://jobs:8050", "Secret": "from-config", "ServerUrl": "http://x:1"}
    }

    settings = plugin._settings(configuration)

    assert settings["Url"] == "http://env-jobs:9000"
    assert settings["Secret"] == "from-env"
    assert settings["ServerUrl"] == "https://orthanc-1.example:8443"


def test_empty_environment_variables_do_not_override(clean_env):
    for name in ("ORTHANC_JOBS_URL", "ORTHANC_JOBS_SECRET", "ORTHANC_JOBS_SERVER_URL"):
        clean_env.setenv(name, "")
    configuration = {"OrthancJobs": {"Url": "http://jobs:8050", "Secret": "from-config"}}

    settings = plugin._settings(configuration)

    assert settings["Url"] == "http://jobs:8050"
    assert settings["Secret"] == "from-config"
    assert settings["ServerUrl"] == "http://127.0.0.1:8042"


@pytest.mark.parametrize(
    ("configuration", "expected"),
    [
        ({"HttpPort": 9042}, "http://127.0.0.1:9042"),
        ({"HttpPort": "8043"}, "http://127.0.0.1:8043"),
        ({"SslEnabled": True}, "https://127.0.0.1:8042"),
        ({"SslEnabled": True, "HttpPort": 443}, "https://127.0.0.1:443"),
        ({"SslEnabled": False, "HttpPort": 80}, "http://127.0.0.1:80"),
    ],
)
def test_default_server_url_derives_from_http_port_and_ssl(clean_env, configuration, expected):
    assert plugin._settings(configuration)["ServerUrl"] == expected


# ---- started by Orthanc (a stand-in `orthanc` module) ----


class OrthancHttp:
    """A real HTTP server playing this Orthanc's REST API for the plugin: ``/system``, ``/jobs/{id}`` of
    ``jobs`` (``/jobs/nan``: 400, as Orthanc answers for a job it cannot write), 401 without ``token``;
    kept-alive connections as Orthanc's, or one closed after each answer."""

    def __init__(
        self, jobs: dict[str, dict] | None = None, token: str | None = None, keep_alive: bool = True
    ):
        self.jobs = jobs if jobs is not None else {}
        self.connections = 0
        self.reads: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def setup(self):
                server.connections += 1
                super().setup()

            def do_GET(self):
                authorization = self.headers.get("Authorization")
                server.reads.append((self.path, authorization))
                job_id = self.path.removeprefix("/jobs/")
                status, body = 404, b""
                if token is not None and authorization != token:
                    status = 401
                elif self.path == "/system":
                    status, body = 200, json.dumps({"Version": ORTHANC_VERSION}).encode()
                elif self.path == "/jobs/nan":
                    status, body = 400, b'{"Details": "Presumably an error while parsing the JSON body"}'
                elif job_id in server.jobs:
                    status, body = 200, json.dumps(server.jobs[job_id]).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class FakeOrthanc:
    """The ``orthanc`` module as the Python plugin gives it; its REST API is a real HTTP server (the plugin
    reads jobs over HTTP with its token), and its in-process reads are recorded as the faults they are."""

    def __init__(self, configuration: dict, jobs: dict[str, dict] | None = None):
        self.configuration = configuration
        self.callbacks: list = []
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.in_process_reads: list[str] = []
        self.http = OrthancHttp(jobs, token="Bearer generated-token")
        self.http_port = self.http.port

    def close(self):
        self.http.close()

    def GetConfiguration(self):
        return json.dumps(self.configuration)

    def RestApiGet(self, uri):
        # Orthanc 1.10.1 and 1.12.7 abort on some in-process reads (a job whose progress is NaN).
        self.in_process_reads.append(uri)
        raise RuntimeError("in-process REST read")

    def GenerateRestApiAuthorizationToken(self):
        return "Bearer generated-token"

    def RegisterOnChangeCallback(self, callback):
        self.callbacks.append(callback)

    def LogError(self, message):
        self.errors.append(message)

    def LogWarning(self, message):
        self.warnings.append(message)


def test_inside_orthanc_without_a_secret_the_reporter_is_off(clean_env):
    fake = FakeOrthanc({"PythonScript": str(PLUGIN_PATH)})
    clean_env.setitem(sys.modules, "orthanc", fake)

    module = load_plugin("orthanc_jobs_reporter_in_orthanc_no_secret")
    fake.close()

    assert module._reporter is None
    assert fake.callbacks == []
    assert any("no secret" in message for message in fake.errors)


def test_inside_orthanc_as_the_python_script_it_registers_and_reports(servers, clean_env):
    stub = servers.stub()
    job = {"ID": "job-here", "State": "Success", "Type": "Archive"}
    fake = FakeOrthanc({}, jobs={"job-here": job})
    fake.configuration = {
        "Name": "orthanc-b",
        "HttpPort": fake.http_port,
        "PythonScript": str(PLUGIN_PATH),
        "OrthancJobs": {"Url": stub.url, "Secret": SECRET, "HeartbeatInterval": 0.05, "Timeout": 0.5},
    }
    clean_env.setitem(sys.modules, "orthanc", fake)

    module = load_plugin("orthanc_jobs_reporter_in_orthanc")
    reporter = module._reporter
    try:
        assert reporter is not None
        assert fake.callbacks == [reporter.on_change]
        assert wait_until(lambda: stub.received("/register"))
        identity = stub.received("/register")[0].body
        assert identity["Name"] == "orthanc-b"
        assert identity["Url"] == f"http://127.0.0.1:{fake.http_port}"
        assert identity["Token"] == "Bearer generated-token"
        assert identity["OrthancVersion"] == ORTHANC_VERSION
        uuid.UUID(identity["Incarnation"])

        module.on_change(JOB_SUCCESS, 0, "job-gone")  # Orthanc answers 404: sent without the job JSON
        module.on_change(JOB_SUCCESS, 0, "job-here")
        assert wait_until(lambda: len(stub.delivered()) >= 2)
        assert stub.delivered() == [
            {"Type": "JOB_SUCCESS", "JobId": "job-gone"},
            {"Type": "JOB_SUCCESS", "JobId": "job-here", "Job": job},
        ]
        # Read over HTTP with the plugin's own token, never in-process.
        assert ("/jobs/job-here", "Bearer generated-token") in fake.http.reads
        assert fake.in_process_reads == []
    finally:
        if reporter is not None:
            reporter.stop(budget=0.2)
        fake.close()


def test_a_batch_refused_as_too_large_is_split(servers, make_reporter):
    stub = servers.stub()
    stub.refuse = lambda route, body: 413 if route == "/events" and len(body["Events"]) > 10 else None
    harness = make_reporter(stub.url, start=False)
    for i in range(25):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")
    harness.reporter.start()

    assert wait_until(lambda: len(stub.delivered()) >= 25)
    assert job_ids(stub.delivered()) == [f"job-{i}" for i in range(25)]
    assert all(len(r.body["Events"]) <= 10 for r in stub.received("/events", 200))


def test_an_event_refused_with_its_json_is_sent_without_it(servers, make_reporter):
    stub = servers.stub()

    stub.refuse = refusing(400, lambda event: event.get("JobId") == "poison" and "Job" in event)
    harness = make_reporter(stub.url)
    for job_id in ("before", "poison", "after"):
        harness.reporter.on_change(JOB_SUCCESS, 0, job_id)

    assert wait_until(lambda: len(stub.delivered()) >= 3)
    delivered = stub.delivered()
    assert job_ids(delivered) == ["before", "poison", "after"]
    assert "Job" not in delivered[1] and "Job" in delivered[2]


def test_an_event_always_refused_is_dropped_with_a_log_line_not_retried_forever(servers, make_reporter):
    stub = servers.stub()

    stub.refuse = refusing(400, lambda event: event.get("JobId") == "poison")
    harness = make_reporter(stub.url)
    for job_id in ("before", "poison", "after"):
        harness.reporter.on_change(JOB_SUCCESS, 0, job_id)
    harness.reporter.on_change(JOB_SUCCESS, 0, "later")

    assert wait_until(lambda: len(stub.delivered()) >= 3)
    assert job_ids(stub.delivered()) == ["before", "after", "later"]
    assert wait_until(lambda: harness.logged("refused an event"))
    assert len(stub.received("/register")) == 1  # a 400 is not a reason to register again


# ---- each job's JSON, read when its event happens ----


def test_the_job_json_is_read_when_the_event_happens_not_when_the_service_is_back(
    servers, make_reporter, short_backoff
):
    """Orthanc forgets finished jobs (JobsHistorySize): a job read only after an outage would be gone."""
    port = free_port()
    forgotten: set[str] = set()
    reads: list[str] = []

    def orthanc_forgets_after_one_read(uri):
        reads.append(uri)
        if uri == "/system":
            return json.dumps({"Version": ORTHANC_VERSION}).encode()
        job_id = uri.removeprefix("/jobs/")
        if job_id in forgotten:
            return None
        forgotten.add(job_id)
        return json.dumps(job_json(uri)).encode()

    harness = make_reporter(f"http://127.0.0.1:{port}", read_local=orthanc_forgets_after_one_read)
    for i in range(30):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")
    assert wait_until(lambda: len(harness.reporter.queue) == 30)

    stub = servers.stub(port)  # the job-service comes back only now

    assert wait_until(lambda: len(stub.delivered()) >= 30)
    assert stub.delivered() == [
        {"Type": "JOB_SUCCESS", "JobId": f"job-{i}", "Job": job_json(f"/jobs/job-{i}")} for i in range(30)
    ]
    assert [uri for uri in reads if uri.startswith("/jobs/")] == [f"/jobs/job-{i}" for i in range(30)]


def test_a_newer_event_with_json_replaces_the_queued_one_of_the_same_job(servers, make_reporter):
    port = free_port()
    states = {"job-1": iter(["Pending", "Success"]), "job-2": iter(["Pending"])}

    def read(uri):
        job_id = uri.removeprefix("/jobs/")
        state = next(states.get(job_id, iter(())), None)
        return None if state is None else json.dumps({"ID": job_id, "State": state}).encode()

    harness = make_reporter(f"http://127.0.0.1:{port}", read_local=read)
    reporter = harness.reporter
    reporter.on_change(JOB_SUBMITTED, 0, "job-1")
    reporter.on_change(JOB_SUBMITTED, 0, "job-2")
    reporter.on_change(JOB_SUCCESS, 0, "job-1")  # with its JSON: the one event job-1 needs
    reporter.on_change(JOB_FAILURE, 0, "job-2")  # Orthanc forgot it: must not take job-2's JSON away
    assert wait_until(lambda: len(reporter.queue) == 3 and not reporter.captures)

    stub = servers.stub(port)

    assert wait_until(lambda: len(stub.delivered()) >= 3)
    assert stub.delivered() == [
        {"Type": "JOB_SUBMITTED", "JobId": "job-2", "Job": {"ID": "job-2", "State": "Pending"}},
        {"Type": "JOB_SUCCESS", "JobId": "job-1", "Job": {"ID": "job-1", "State": "Success"}},
        {"Type": "JOB_FAILURE", "JobId": "job-2"},
    ]


def test_beyond_its_bytes_the_queue_lets_go_of_the_oldest_json_first_and_says_so(
    servers, make_reporter, short_backoff
):
    port = free_port()
    size = len(json.dumps(job_json("/jobs/job-00")))
    harness = make_reporter(
        f"http://127.0.0.1:{port}", queue_size=100, queue_bytes=10 * size, heartbeat_interval=0.05
    )
    reporter = harness.reporter
    for i in range(25):
        reporter.on_change(JOB_SUCCESS, 0, f"job-{i:02d}")
    assert wait_until(lambda: len(reporter.queue) == 25 and not reporter.captures)

    assert [("Job" in event) for event in reporter.queue] == [False] * 15 + [True] * 10
    assert reporter.outbox.dropped_json == 15 and reporter.dropped == 0
    assert [e for e in harness.errors if "dropped" in e] == [  # at the first loss, not at each one
        "orthanc-jobs: the job-service unreachable or refusing: 0 job event(s) dropped so far, and "
        "the JSON of 1 job(s) (QueueSize 100, QueueBytes "
        + str(10 * size)
        + "); the job-service shows this gap"
    ]

    stub = servers.stub(port)
    assert wait_until(lambda: len(stub.delivered()) >= 25)
    assert job_ids(stub.delivered()) == [f"job-{i:02d}" for i in range(25)]  # every event still arrives
    assert wait_until(lambda: stub.received("/heartbeat", 200))
    gap = stub.received("/heartbeat", 200)[-1].body["Gap"]
    assert (gap["DroppedEvents"], gap["DroppedJobJson"]) == (0, 15)
    assert gap["First"] <= gap["Last"] <= time.time()


def test_beyond_its_size_the_queue_drops_the_oldest_events_and_heartbeats_show_the_gap(
    servers, make_reporter, short_backoff
):
    port = free_port()
    harness = make_reporter(f"http://127.0.0.1:{port}", queue_size=20, heartbeat_interval=0.05)
    for i in range(50):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")
    assert wait_until(lambda: harness.reporter.dropped == 30 and not harness.reporter.captures)
    # Logged as an error at the first loss, not at each one.
    assert len([e for e in harness.errors if "dropped" in e]) == 1

    stub = servers.stub(port)

    assert wait_until(lambda: len(stub.delivered()) >= 20)
    assert job_ids(stub.delivered()) == [f"job-{i}" for i in range(30, 50)]
    assert wait_until(lambda: stub.received("/heartbeat", 200))
    gap = stub.received("/heartbeat", 200)[-1].body["Gap"]
    # 50 events in a burst outrun the reads too: those read too late went without JSON, counted.
    without_json = len([event for event in stub.delivered() if "Job" not in event])
    assert (gap["DroppedEvents"], gap["DroppedJobJson"]) == (30, without_json)


def test_no_gap_is_reported_when_nothing_was_dropped(servers, make_reporter):
    stub = servers.stub()
    harness = make_reporter(stub.url, heartbeat_interval=0.05)
    harness.reporter.on_change(JOB_SUCCESS, 0, "job-1")
    assert wait_until(lambda: stub.delivered() and len(stub.received("/heartbeat", 200)) >= 3)
    assert all("Gap" not in r.body for r in stub.received("/heartbeat"))


def test_a_job_orthanc_cannot_write_or_a_failing_read_leaves_the_capture_thread_alive(servers, make_reporter):
    stub = servers.stub()
    answers = {
        "/jobs/raises": OSError("connection refused"),
        "/jobs/garbage": b"<html>not json</html>",
        "/jobs/empty": b"",
        "/jobs/weird": 42,
    }

    def read(uri):
        answer = answers.get(uri, json.dumps(job_json(uri)).encode())
        if isinstance(answer, Exception):
            raise answer
        return answer

    harness = make_reporter(stub.url, read_local=read)
    for job_id in ("raises", "garbage", "empty", "weird", "fine"):
        harness.reporter.on_change(JOB_SUCCESS, 0, job_id)

    assert wait_until(lambda: len(stub.delivered()) >= 5)
    assert stub.delivered() == [
        {"Type": "JOB_SUCCESS", "JobId": "raises"},
        {"Type": "JOB_SUCCESS", "JobId": "garbage"},
        {"Type": "JOB_SUCCESS", "JobId": "empty"},
        {"Type": "JOB_SUCCESS", "JobId": "weird"},
        {"Type": "JOB_SUCCESS", "JobId": "fine", "Job": job_json("/jobs/fine")},
    ]
    assert harness.reporter.capture_thread.is_alive()


def test_job_json_goes_on_as_orthanc_wrote_it_however_deep():
    """The plugin never parses a job's JSON: nesting beyond Python's recursion limit cannot break it."""
    deep = b'{"ID": "job-1", "Content": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}"
    body = plugin._encode_events("inc-1", [{"Type": "JOB_SUCCESS", "JobId": "job-1", "Job": deep}])
    assert body.startswith(b'{"Incarnation": "inc-1", "Events": [{"Type": "JOB_SUCCESS", "JobId": "job-1", ')
    assert body.endswith(b'"Job": ' + deep + b"}]}")


# ---- what the job-service refuses ----


def test_events_the_service_refuses_one_by_one_are_logged_not_sent_again(servers, make_reporter):
    stub = servers.stub()
    refusal = {"Index": 0, "JobId": "job-0", "Reason": "the job's JSON cannot be stored"}
    stub.reply = lambda route, body: json.dumps(
        {"Accepted": len(body["Events"]) - 1, "Refused": [refusal]} if route == "/events" else {}
    ).encode()
    harness = make_reporter(stub.url, heartbeat_interval=30)
    harness.reporter.on_change(JOB_SUCCESS, 0, "job-0")
    assert wait_until(lambda: harness.logged_error("cannot be stored"))
    harness.reporter.on_change(JOB_SUCCESS, 0, "job-1")

    assert wait_until(lambda: len(stub.received("/events", 200)) == 2)
    time.sleep(0.2)
    assert job_ids(stub.delivered()) == ["job-0", "job-1"]
    assert harness.reporter.refused == 2


def test_an_event_answered_500_for_ever_is_let_go_and_the_later_ones_flow(
    servers, make_reporter, short_backoff
):
    """A job-service that answers heartbeats but always fails on one event (a defect of its own) must not
    hold back every later event of the server: split, then sent without its JSON, then let go, loudly."""
    stub = servers.stub()

    stub.refuse = refusing(500, lambda event: event.get("JobId") == "poison")
    harness = make_reporter(stub.url, heartbeat_interval=0.05)
    assert wait_until(lambda: stub.received("/register"))
    for job_id in ("before", "poison", "after"):
        harness.reporter.on_change(JOB_SUCCESS, 0, job_id)

    assert wait_until(lambda: len(stub.delivered()) >= 2, timeout=10)
    assert job_ids(stub.delivered()) == ["before", "after"]
    assert wait_until(lambda: harness.logged_error("refused an event"))
    harness.reporter.on_change(JOB_SUCCESS, 0, "later")
    assert wait_until(lambda: job_ids(stub.delivered())[-1:] == ["later"])
    poisoned = [r for r in stub.received("/events", 500) if len(r.body["Events"]) == 1]
    assert len(poisoned) <= 2 * plugin.TRIES_BEFORE_GIVING_UP  # a bounded number of tries, not for ever


def test_500_while_the_service_answers_nothing_else_is_retried_not_dropped(
    servers, make_reporter, short_backoff
):
    """5xx on everything (the service is in trouble, not the events): keep the events, keep trying."""
    stub = servers.stub()
    harness = make_reporter(stub.url, heartbeat_interval=0.05)
    assert wait_until(lambda: stub.received("/heartbeat", 200))
    stub.refuse = lambda route, body: 503
    for i in range(3):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")
    time.sleep(1.5)
    assert len(stub.received(status=503)) >= 5

    stub.refuse = None

    assert wait_until(lambda: len(stub.delivered()) >= 3, timeout=10)
    assert job_ids(stub.delivered()) == ["job-0", "job-1", "job-2"]
    assert harness.reporter.refused == 0 and harness.reporter.dropped == 0


# ---- hammered from Orthanc's side ----


def test_on_change_from_many_threads_loses_nothing_and_keeps_each_threads_order(servers, make_reporter):
    stub = servers.stub()
    harness = make_reporter(stub.url, heartbeat_interval=30, queue_size=100_000)
    reporter = harness.reporter

    def orthanc_thread(number: int) -> None:
        for i in range(5000):
            reporter.on_change(JOB_SUCCESS, 0, f"job-{number}-{i}")

    threads = [threading.Thread(target=orthanc_thread, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert wait_until(lambda: len(stub.delivered()) >= 20_000, timeout=60)
    delivered = job_ids(stub.delivered())
    assert len(delivered) == len(set(delivered)) == 20_000
    for number in range(4):  # in the order each thread emitted them
        mine = [job_id for job_id in delivered if job_id.startswith(f"job-{number}-")]
        assert mine == [f"job-{number}-{i}" for i in range(5000)]


def test_on_change_never_waits_for_the_network_or_for_reads_of_orthanc(servers, make_reporter):
    """The job-service never answers and the read of Orthanc never returns (until the test lets it): Orthanc's
    threads only append to a queue under a lock, so their calls all return meanwhile. (Not a timing: a call
    that waited for either would not return at all.)"""
    silent = servers.raw()
    release = threading.Event()

    def stuck_read(uri):
        if uri.startswith("/jobs/"):
            release.wait(30)
        return json.dumps(job_json(uri)).encode()

    harness = make_reporter(silent.url, timeout=30.0, read_local=stuck_read)
    assert wait_until(lambda: silent.connections)  # the registration hangs
    harness.reporter.on_change(JOB_SUCCESS, 0, "job-first")
    assert wait_until(lambda: harness.reporter.capturing is not None)  # its read hangs

    def orthanc_thread(number: int) -> None:
        for i in range(2000):
            harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{number}-{i}")

    threads = [threading.Thread(target=orthanc_thread, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    try:
        assert not any(thread.is_alive() for thread in threads)
        assert len(harness.reporter.captures) == 8000 and harness.reporter.dropped == 0
    finally:
        release.set()


# ---- reading this Orthanc over HTTP ----


@pytest.mark.parametrize("keep_alive", [True, False])
def test_local_orthanc_reads_over_one_connection_with_the_token(keep_alive):
    orthanc = OrthancHttp({f"job-{i}": {"ID": f"job-{i}"} for i in range(20)}, keep_alive=keep_alive)
    local = plugin.LocalOrthanc(orthanc.url, "Bearer plugin-token", timeout=2)
    try:
        for i in range(20):
            assert json.loads(local.get(f"/jobs/job-{i}")) == {"ID": f"job-{i}"}
        assert local.get("/jobs/nan") is None  # Orthanc cannot write it: 400
        assert local.get("/jobs/unknown") is None  # 404
        assert all(token == "Bearer plugin-token" for _, token in orthanc.reads)
        assert orthanc.connections == (1 if keep_alive else 22)
    finally:
        orthanc.close()


def test_local_orthanc_raises_when_nothing_listens_then_connects_once_orthanc_is_up():
    port = free_port()
    local = plugin.LocalOrthanc(f"http://127.0.0.1:{port}", "Bearer t", timeout=2)
    with pytest.raises(OSError):
        local.get("/jobs/job-1")  # Orthanc's HTTP server not up yet: the capture thread sends without JSON
    orthanc = OrthancHttp({"job-1": {"ID": "job-1"}})
    try:
        local = plugin.LocalOrthanc(orthanc.url, "Bearer t", timeout=2)
        assert json.loads(local.get("/jobs/job-1")) == {"ID": "job-1"}
    finally:
        orthanc.close()


# ---- what the review of the queue found ----


def test_one_poisoned_event_among_many_costs_only_itself_through_the_usual_loop(
    servers, make_reporter, short_backoff
):
    stub = servers.stub()

    stub.refuse = refusing(500, lambda event: event.get("JobId") == "job-123")
    harness = make_reporter(stub.url, heartbeat_interval=0.05, start=False)
    for i in range(200):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")
    harness.reporter.start()

    assert wait_until(lambda: len(stub.delivered()) >= 199, timeout=20)
    assert job_ids(stub.delivered()) == [f"job-{i}" for i in range(200) if i != 123]
    # Found by halves, each through the sender's loop: a handful of requests, not a burst of hundreds.
    assert len(stub.received("/events")) < 40
    assert wait_until(
        lambda: (stub.received("/heartbeat", 200)[-1].body.get("Gap") or {}).get("DroppedEvents")
    )
    gap = stub.received("/heartbeat", 200)[-1].body["Gap"]
    assert (gap["DroppedEvents"], gap["DroppedJobJson"]) == (1, 1)
    assert harness.logged_error("refused an event (500); dropped")
    # Back to full batches afterwards.
    for i in range(200, 400):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")
    assert wait_until(lambda: len(stub.delivered()) >= 399, timeout=10)
    assert harness.reporter.isolating_through is None and harness.reporter.batch_limit == plugin.BATCH_SIZE


def test_503_on_events_while_heartbeats_succeed_is_never_given_up(servers, make_reporter, short_backoff):
    """503 says the job-service cannot take events now (its history cannot be written): keep them all."""
    stub = servers.stub()
    harness = make_reporter(stub.url, heartbeat_interval=0.05)
    stub.refuse = lambda route, body: 503 if route == "/events" else None
    for i in range(10):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")
    assert wait_until(
        lambda: len(stub.received("/events", 503)) >= 3 * plugin.TRIES_BEFORE_GIVING_UP, timeout=10
    )
    assert harness.reporter.dropped == 0 and harness.reporter.outbox.dropped_json == 0

    stub.refuse = None

    assert wait_until(lambda: len(stub.delivered()) >= 10, timeout=10)
    assert job_ids(stub.delivered()) == [f"job-{i}" for i in range(10)]
    assert all("Job" in event for event in stub.delivered())


def test_a_slow_read_never_lets_an_older_event_replace_a_newer_one(servers, make_reporter):
    """Reads fall far behind while a job's end event waits: the end event stays the last word."""
    port = free_port()
    reading = threading.Event()
    release = threading.Event()

    def slow_first_read(uri):
        if uri == "/jobs/job-a" and not reading.is_set():
            reading.set()
            release.wait(3)
            return json.dumps({"ID": "job-a", "State": "Pending"}).encode()
        return json.dumps({"ID": uri.removeprefix("/jobs/"), "State": "Success"}).encode()

    harness = make_reporter(f"http://127.0.0.1:{port}", queue_size=4, read_local=slow_first_read)
    reporter = harness.reporter
    reporter.on_change(JOB_SUBMITTED, 0, "job-a")
    assert reading.wait(2)
    reporter.on_change(JOB_SUCCESS, 0, "job-a")
    for i in range(6):  # the reads fall behind: some are skipped, the oldest dropped
        reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")
    release.set()
    assert wait_until(lambda: not reporter.captures and reporter.capturing is None)

    stub = servers.stub(port)

    assert wait_until(lambda: stub.delivered() and not reporter.queue)
    delivered = stub.delivered()
    of_a = [event["Type"] for event in delivered if event["JobId"] == "job-a"]
    assert not of_a or of_a[-1] == "JOB_SUCCESS"
    # 8 events: each delivered, or counted as dropped, but for job-a's first event, which its end may replace.
    assert len(delivered) + reporter.dropped >= 7


def test_sent_events_hold_no_memory_and_batches_are_bounded_in_bytes(
    servers, make_reporter, short_backoff, monkeypatch
):
    monkeypatch.setattr(plugin, "BATCH_BYTES", 50_000)
    port = free_port()
    big = {"ID": "x", "State": "Success", "Content": {"Padding": "x" * 10_000}}

    def read(uri):
        return json.dumps(dict(big, ID=uri.removeprefix("/jobs/"))).encode()

    harness = make_reporter(f"http://127.0.0.1:{port}", read_local=read)
    for i in range(100):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")
    assert wait_until(lambda: len(harness.reporter.queue) == 100)

    stub = servers.stub(port)

    assert wait_until(lambda: len(stub.delivered()) >= 100)
    assert all(len(json.dumps(r.body)) < 60_000 for r in stub.received("/events", 200))  # about 4 jobs each
    outbox = harness.reporter.outbox
    assert outbox.bytes == 0
    assert len(outbox.with_json) <= 64 and all(isinstance(seq, int) for _, seq in outbox.with_json)


def test_losses_many_at_once_are_logged(make_reporter):
    harness = make_reporter(f"http://127.0.0.1:{free_port()}", queue_size=5, start=False)
    reporter = harness.reporter
    for i in range(5):
        reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")
    with reporter.lock:
        while reporter.captures:
            reporter._queue(reporter.captures.popleft())
    in_flight = [{"Type": "JOB_SUCCESS", "JobId": f"old-{i}", "_seq": -i} for i in range(3)]

    reporter._give_back(in_flight)  # three dropped at once, the first losses

    assert reporter.dropped == 3
    assert [e for e in harness.errors if "dropped" in e] == [
        "orthanc-jobs: the job-service unreachable or refusing: 3 job event(s) dropped so far, and the JSON "
        "of 0 job(s) (QueueSize 5, QueueBytes 67108864); the job-service shows this gap"
    ]


def test_failing_reads_of_orthanc_are_logged_once_a_minute(servers, make_reporter):
    stub = servers.stub()

    def refused(uri):
        raise plugin.OrthancAnswered(401)

    harness = make_reporter(stub.url, read_local=refused)
    for i in range(20):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")

    assert wait_until(lambda: len(stub.delivered()) >= 20)
    assert [e for e in harness.errors if "cannot read" in e] == [
        "orthanc-jobs: cannot read this Orthanc's jobs over HTTP (OrthancJobs.LocalUrl): Orthanc answered "
        "401; 1 read(s) failed so far, their events go without the job's JSON"
    ]
    assert harness.reporter.read_errors == 20


def test_local_orthanc_gives_up_a_stalled_read_after_its_timeout_once():
    """A time-out is not tried again: the capture thread waits ``Timeout``, not twice that."""
    answered = threading.Event()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def serve_once_then_stall():
        connection, _ = listener.accept()
        connection.recv(65536)
        body = b'{"ID": "job-1"}'
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        answered.set()
        connection.recv(65536)  # the next request on the kept-alive connection: never answered
        time.sleep(3)
        connection.close()

    threading.Thread(target=serve_once_then_stall, daemon=True).start()
    local = plugin.LocalOrthanc(f"http://127.0.0.1:{listener.getsockname()[1]}", "Bearer t", timeout=0.5)
    try:
        assert local.get("/jobs/job-1") == b'{"ID": "job-1"}'
        started = time.monotonic()
        with pytest.raises(OSError):
            local.get("/jobs/job-2")
        assert time.monotonic() - started < 0.9
    finally:
        listener.close()


def test_a_500_after_a_search_ended_is_tried_again_not_held_against_an_innocent_event(
    servers, make_reporter, short_backoff
):
    stub = servers.stub()

    stub.refuse = refusing(500, lambda event: event.get("JobId") == "culprit" and "Job" in event)
    harness = make_reporter(stub.url, heartbeat_interval=0.05)
    harness.reporter.on_change(JOB_SUCCESS, 0, "culprit")  # refused with its JSON, fine without
    assert wait_until(lambda: job_ids(stub.delivered()) == ["culprit"], timeout=10)
    assert wait_until(lambda: harness.reporter.isolating_through is None)

    stub.refuse = None
    stub.plan("/events", 500, 500)  # a short hiccup of the service
    harness.reporter.on_change(JOB_SUCCESS, 0, "innocent")

    assert wait_until(lambda: len(stub.delivered()) >= 2, timeout=10)
    assert stub.delivered()[-1] == {
        "Type": "JOB_SUCCESS",
        "JobId": "innocent",
        "Job": job_json("/jobs/innocent"),
    }
    assert harness.reporter.dropped == 0


def test_each_halving_after_a_500_waits_for_a_heartbeat_answered(servers, make_reporter, short_backoff):
    stub = servers.stub()
    stub.refuse = lambda route, body: 500 if route == "/events" else None  # a service broken on events only
    harness = make_reporter(stub.url, heartbeat_interval=0.05, start=False)
    for i in range(64):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")
    harness.reporter.start()
    assert wait_until(lambda: harness.reporter.dropped >= 1, timeout=20)

    routes = [(r.route, r.status) for r in stub.received() if r.route in ("/events", "/heartbeat")]
    refusals = [n for n, (route, _) in enumerate(routes) if route == "/events"]
    # Between two refused sends, the service answered a heartbeat: never a burst of halvings.
    assert all(("/heartbeat", 200) in routes[a:b] for a, b in itertools.pairwise(refusals))


def test_batches_fit_what_the_service_accepts_and_a_job_too_large_goes_without_json(servers, make_reporter):
    stub = servers.stub()
    stub.reply = lambda route, body: (
        json.dumps({"Status": "ok", "MaxBodyBytes": 4000}).encode() if route == "/register" else b"{}"
    )
    sizes = {"huge": 5000}

    def read(uri):
        job_id = uri.removeprefix("/jobs/")
        return json.dumps({"ID": job_id, "Padding": "x" * sizes.get(job_id, 300)}).encode()

    harness = make_reporter(stub.url, heartbeat_interval=30, read_local=read)
    assert wait_until(lambda: harness.reporter.batch_bytes == 2000)  # once the registration is answered
    harness.reporter.on_change(JOB_SUCCESS, 0, "huge")
    for i in range(20):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")

    assert wait_until(lambda: len(stub.delivered()) >= 21)
    assert stub.delivered()[0] == {"Type": "JOB_SUCCESS", "JobId": "huge"}
    assert all(len(json.dumps(r.body)) < 4000 for r in stub.received("/events"))
    assert harness.reporter.outbox.dropped_json == 1


def test_a_queue_of_one_still_reads_each_job(servers, make_reporter):
    stub = servers.stub()
    harness = make_reporter(stub.url, queue_size=1)
    harness.reporter.on_change(JOB_SUCCESS, 0, "job-1")
    assert wait_until(lambda: stub.delivered())
    assert stub.delivered() == [{"Type": "JOB_SUCCESS", "JobId": "job-1", "Job": job_json("/jobs/job-1")}]


def test_a_registration_refused_is_not_held_against_the_events(servers, make_reporter, short_backoff):
    stub = servers.stub()
    harness = make_reporter(stub.url, heartbeat_interval=30)
    assert wait_until(lambda: stub.received("/register", 200))
    stub.forget()
    stub.plan("/register", 400)
    for i in range(4):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")

    assert wait_until(lambda: len(stub.delivered()) >= 4, timeout=10)
    assert all("Job" in event for event in stub.delivered())
    assert [len(r.body["Events"]) for r in stub.received("/events", 200)] == [4]
    assert harness.reporter.isolating_through is None


def test_at_shutdown_tries_go_on_until_the_deadline_then_what_is_left_is_logged(servers, make_reporter):
    stub = servers.stub()
    harness = make_reporter(stub.url, heartbeat_interval=30)
    assert wait_until(lambda: stub.received("/register", 200))
    stub.refuse = lambda route, body: 503 if route == "/events" else None
    for i in range(3):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")

    started = time.monotonic()
    harness.reporter.stop(budget=0.5)

    assert time.monotonic() - started < 1.0
    assert len(stub.received("/events", 503)) >= 2  # tried again within the budget
    assert harness.logged_error("Orthanc stops: 4 event(s) not delivered")

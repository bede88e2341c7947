"""Stand-ins for the reporter plugin's tests: the plugin loaded from its path, the job-service (a recording
HTTP stub, a socket server that never answers or answers garbage), this Orthanc's REST API, and a clock the
tests drive. Real servers on 127.0.0.1: no mocking of urllib."""

import collections
import importlib.util
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from orthanc_jobs import INTERNAL_PREFIX

PLUGIN_PATH = (
    Path(__file__).resolve().parents[3] / "src" / "orthanc_jobs" / "plugin" / "orthanc_jobs_reporter.py"
)
PREFIX = INTERNAL_PREFIX
SECRET = "s3cret"
ORTHANC_VERSION = "1.12.4"
ORTHANC_STOPPED = 11
JOB_SUBMITTED, JOB_SUCCESS, JOB_FAILURE = 16, 17, 18
SERVER_HEADER = "X-Orthanc-Jobs-Server"
#: A status for ServiceStub.plan or refuse: read the request, record it, close the connection unanswered.
HANG_UP = 0


def load_plugin(name: str = "orthanc_jobs_reporter_under_test"):
    spec = importlib.util.spec_from_file_location(name, PLUGIN_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


plugin = load_plugin()


def wait_until(predicate, timeout: float = 3.0, interval: float = 0.01) -> bool:
    """Waits for another thread's work (a request sent, a read done), polling: not for time to pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class FakeClock:
    """The reporter's clock, driven by the test: its time stands still until the test moves it on.

    The reporter's waits on it end as on the real clock: when notified (a new event, ``stop()``) or when their
    time is up, which only ``advance``, ``advance_to`` or ``run_until`` brings. ``next_deadline`` waits until
    a thread of the reporter waits on the clock, that is until it has done all it can at this time.
    ``release`` lets time run (each wait ends at once, its time passed): for stopping reporters at the end.
    """

    # A wait on the clock also ends after this long in real time; the reporter's loops wait again.
    REAL_TIMEOUT = 10.0

    def __init__(self) -> None:
        self.now = 1024.0  # with binary fractions of a second (0.5, 0.25, 1) sums stay exact
        self.epoch = time.time() - self.now
        self.changed = threading.Condition()
        self.sleepers: dict[object, tuple[float, threading.Condition | None]] = {}
        self.released = False

    def monotonic(self) -> float:
        with self.changed:
            return self.now

    def time(self) -> float:
        return self.epoch + self.monotonic()

    def wait(self, condition: threading.Condition, timeout: float) -> None:
        token = self._sleep_from(timeout, condition)
        if token is None:
            return
        try:
            condition.wait(self.REAL_TIMEOUT)
        finally:
            with self.changed:
                self.sleepers.pop(token, None)
                self.changed.notify_all()

    def sleep(self, seconds: float) -> None:
        token = self._sleep_from(seconds, None)
        if token is None:
            return
        with self.changed:
            self.changed.wait_for(lambda: token not in self.sleepers, self.REAL_TIMEOUT)
            self.sleepers.pop(token, None)
            self.changed.notify_all()

    def _sleep_from(self, seconds: float, condition: threading.Condition | None) -> object | None:
        with self.changed:
            if self.released:
                self.now += seconds
                return None
            token = object()
            self.sleepers[token] = (self.now + seconds, condition)
            self.changed.notify_all()
            return token

    def advance(self, seconds: float) -> None:
        self.advance_to(self.monotonic() + seconds)

    def advance_to(self, moment: float, *, only_to_a_wait: bool = False) -> None:
        """``only_to_a_wait``: only if a wait that ends then is still on (not notified meanwhile)."""
        with self.changed:
            if only_to_a_wait and all(end != moment for end, _ in self.sleepers.values()):
                return
            self.now = max(self.now, moment)
            ended = self._end([token for token, (end, _) in self.sleepers.items() if end <= self.now])
        _notify(ended)

    def next_deadline(self, timeout: float = 5.0) -> float:
        """When the earliest wait on the clock ends, once one has begun (waits for it, in real time)."""
        with self.changed:
            assert self.changed.wait_for(lambda: self.sleepers, timeout), "nothing waits on the clock"
            return min(end for end, _ in self.sleepers.values())

    def run_until(
        self, predicate: Callable[[], bool], idle: Callable[[], bool], timeout: float = 20.0
    ) -> bool:
        """Lets time go on, from one wait's end to the next whenever ``idle()``, until ``predicate()``."""
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            with self.changed:
                self.changed.wait_for(lambda: self.sleepers, 0.01)
                earliest = min((end for end, _ in self.sleepers.values()), default=None)
            # Asked once the reporter waits: what it did up to now counts, before time goes on.
            if predicate():
                return True
            if earliest is not None and idle():
                self.advance_to(earliest, only_to_a_wait=True)
        return bool(predicate())

    def condition(self, lock: threading.Lock) -> threading.Condition:
        """A condition for the reporter to wait on: a wait it notifies no longer counts as one on the clock,
        even before its thread has woken (so ``next_deadline`` never answers with a wait about to end)."""
        clock = self

        class Observed(threading.Condition):
            def notify(self, n: int = 1) -> None:
                clock._notified(self)
                super().notify(n)

            def notify_all(self) -> None:
                clock._notified(self)
                super().notify_all()

        return Observed(lock)

    def _notified(self, condition: threading.Condition) -> None:
        with self.changed:
            for token in [token for token, (_, waits_on) in self.sleepers.items() if waits_on is condition]:
                del self.sleepers[token]
            self.changed.notify_all()

    def release(self) -> None:
        with self.changed:
            self.released = True
            ended = self._end(list(self.sleepers))
        _notify(ended)

    def _end(self, tokens: list[object]) -> list[threading.Condition]:
        """Ends these waits (the clock's lock held); returns the conditions to notify once it is let go: the
        reporter holds its own lock when it takes the clock's."""
        conditions = [self.sleepers.pop(token)[1] for token in tokens]
        self.changed.notify_all()
        return [condition for condition in conditions if condition is not None]


def _notify(conditions: list[threading.Condition]) -> None:
    for condition in conditions:
        with condition:
            condition.notify_all()


@dataclass
class Received:
    path: str
    route: str
    authorization: str | None
    server: str | None  # X-Orthanc-Jobs-Server: whose secret the plugin presents
    content_type: str | None
    body: Any
    status: int
    at: float  # when it came, on the test's clock (FakeClock.monotonic)


class ServiceStub:
    """A real HTTP job-service stand-in that records what it receives.

    ``/register`` makes the incarnation known; ``/heartbeat`` and ``/events`` for an unknown incarnation get
    404, like the real service after a restart. ``plan(route, status, ...)`` forces the next answers of a
    route (HANG_UP: none, the connection closed); a wrong ``Authorization`` gets 403. Each request is
    recorded with the time on ``clock``.
    """

    def __init__(self, clock: "FakeClock", port: int = 0, secret: str = SECRET):
        self.clock = clock
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
                            self.headers.get(SERVER_HEADER),
                            self.headers.get("Content-Type"),
                            body,
                            status,
                            stub.clock.monotonic(),
                        )
                    )
                if status == HANG_UP:
                    self.close_connection = True
                    return
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
        (checked here: a job event carries when Orthanc emitted it, on the reporter's clock)."""
        events = [dict(event) for r in self.received("/events", 200) for event in r.body["Events"]]
        for event in events:
            if event["Type"] != "ORTHANC_STOPPED":
                assert 0 <= self.clock.time() - event.pop("Time") < 3600
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


def job_json(uri: str) -> dict:
    return {"ID": uri.removeprefix("/jobs/"), "State": "Success", "Type": "DicomModalityStore"}


def job_ids(events: list[dict]) -> list[str]:
    return [event.get("JobId") for event in events]


def refusing(status: int, bad: Callable[[dict], bool]) -> Callable[[str, Any], int | None]:
    """A stand-in's ``refuse``: ``status`` for the /events batches that hold an event ``bad`` picks."""

    def refuse(route: str, body: Any) -> int | None:
        events = (body or {}).get("Events", []) if isinstance(body, dict) else []
        return status if route == "/events" and any(bad(event) for event in events) else None

    return refuse


@dataclass
class Harness:
    reporter: Any
    identity: dict
    clock: Any  # FakeClock, or the plugin's SystemClock
    logs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    local_reads: list[str] = field(default_factory=list)

    def logged(self, text: str) -> bool:
        return any(text in line for line in list(self.logs) + list(self.errors))

    def logged_error(self, text: str) -> bool:
        return any(text in line for line in list(self.errors))

    def capture_idle(self) -> bool:
        with self.reporter.lock:  # what the capture thread read is queued, and the sender told, under it
            return not self.reporter.captures and self.reporter.capturing is None

    def until(self, predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
        """Waits for ``predicate``, letting the reporter's time go on whenever it waits for it (FakeClock)."""
        if isinstance(self.clock, FakeClock):
            return self.clock.run_until(predicate, idle=self.capture_idle, timeout=timeout)
        return wait_until(predicate, timeout=timeout)

    def settled(self) -> float:
        """Waits until the reporter has done all it can at this time: its capture thread idle, its sender
        waiting on the clock. Returns when that wait ends."""
        assert wait_until(self.capture_idle)
        return self.clock.next_deadline()

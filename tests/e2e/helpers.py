"""Making studies and jobs on the real cluster, waiting for them, and acting on its processes."""

import asyncio
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

from orthanc_jobs.cluster.demo import create_instance, create_study
from orthanc_jobs.cluster.launcher import DEMO_USER, ClusterState, free_port
from orthanc_jobs.core.model import plugin_secret_for

__all__ = ["create_instance", "create_study", "free_port"]


def direct(cluster: ClusterState, name: str) -> httpx.Client:
    """One Orthanc server on its own port, around nginx and the job-service."""
    return httpx.Client(base_url=cluster.orthanc_urls[name], auth=DEMO_USER, timeout=30)


def cli(cluster: ClusterState, *args: str) -> None:
    """``orthanc-jobs cluster ARGS --dir`` on this cluster (stop, start, restart a process)."""
    command = [sys.executable, "-m", "orthanc_jobs", "cluster", *args, "--dir", cluster.directory]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def pid_of(cluster: ClusterState, name: str) -> int:
    state = ClusterState.load(Path(cluster.directory))
    return next(p.pid for p in state.processes if p.name == name)


TERMINAL = {"Success", "Failure"}


def create_async_job(client: httpx.Client, kind: str, study: str) -> str:
    bodies = {
        "archive": {"Asynchronous": True},
        "modify": {"Asynchronous": True, "Replace": {"StudyDescription": "modified"}},
        "anonymize": {"Asynchronous": True},
    }
    answer = client.post(f"/studies/{study}/{kind}", json=bodies[kind])
    assert answer.status_code == 200, answer.text
    job = answer.json()
    assert job["Path"] == f"/jobs/{job['ID']}"
    return str(job["ID"])


def wait_for(
    predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.05, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(interval)


def wait_job_state(
    client: httpx.Client, job_id: str, states: set[str], timeout: float = 30
) -> dict[str, Any]:
    def current() -> dict[str, Any] | None:
        response = client.get(f"/jobs/{job_id}")
        job = response.json()
        assert "State" in job, f"job {job_id}: {response.status_code} {response.text}"
        return job if job["State"] in states else None

    return dict(wait_for(current, timeout, what=f"job {job_id} in {states}"))


def owner_of(servers: dict[str, httpx.Client], job_id: str) -> str:
    """Ask every server directly: exactly one of them holds the job."""
    owners = [name for name, client in servers.items() if client.get(f"/jobs/{job_id}").status_code == 200]
    assert len(owners) == 1, f"job {job_id} found on {owners}"
    return owners[0]


class SilentModality:
    """A TCP server that accepts DICOM associations and never answers: a C-STORE to it stays Running."""

    def __init__(self) -> None:
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(16)
        self.port = self._server.getsockname()[1]
        self._connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            self._connections.append(connection)

    def store(self, client: httpx.Client, study: str) -> str:
        """Declare this modality on the server ``client`` speaks to, and start a C-STORE of ``study`` to it:
        the id of a job that stays Running until the modality closes."""
        declared = {"AET": "SILENT", "Host": "127.0.0.1", "Port": self.port}
        answer = client.put("/modalities/silent", json=declared)
        assert answer.status_code == 200, answer.text
        answer = client.post("/modalities/silent/store", json={"Resources": [study], "Asynchronous": True})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["ID"])

    def close(self) -> None:
        self._server.close()
        for connection in self._connections:
            connection.close()


def listed_states(lb: httpx.Client, ids: set[str]) -> dict[str, str]:
    """The state of each of ``ids`` that the job-service lists (``GET /jobs?expand``)."""
    return {
        job["ID"]: job["State"] for job in lb.get("/jobs", params={"expand": ""}).json() if job["ID"] in ids
    }


def wait_all_listed(lb: httpx.Client, ids: set[str], timeout: float = 60) -> dict[str, str]:
    """Wait until the job-service lists every one of ``ids``; on time-out, say how many it never listed."""
    deadline = time.monotonic() + timeout
    while True:
        answer = lb.get("/jobs", params={"expand": ""})
        # Just started again, the service answers 503 until a server is live for it (its next heartbeat,
        # when the service was away longer than ORTHANC_JOBS_NOT_RESPONDING_AFTER): nothing to judge yet.
        assert answer.status_code in (200, 503), answer.text
        listed = answer.json() if answer.status_code == 200 else []
        found = {job["ID"]: job["State"] for job in listed if job["ID"] in ids}
        if len(found) == len(ids):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(ids) - len(found)} of {len(ids)} jobs never listed (last: {answer.text[:300]})"
            )
        time.sleep(0.2)


def plugin_headers(cluster: ClusterState, name: str) -> dict[str, str]:
    """The headers of the plugin of one server of the cluster: it names its server, with its own secret."""
    url = cluster.orthanc_urls[name]
    return {"Authorization": f"Bearer {plugin_secret_for(cluster.secret, url)}", "X-Orthanc-Jobs-Server": url}


@contextmanager
def listening(cluster: ClusterState, headers: dict[str, str] | None = None) -> Iterator["queue.Queue[dict]"]:
    """Read the stream on a thread; each event arrives as {"id", "event", "data"}."""
    received: queue.Queue[dict] = queue.Queue()
    client = httpx.Client(auth=DEMO_USER, timeout=httpx.Timeout(30, read=60))
    stop = threading.Event()

    def read() -> None:
        try:
            stream(received)
        except Exception:
            if not stop.is_set():  # closing the client at the end ends the read: expected
                raise

    def stream(received: "queue.Queue[dict]") -> None:
        with client.stream("GET", f"{cluster.lb_url}/orthanc-jobs/events", headers=headers or {}) as answer:
            received.put({"status": answer.status_code, "type": answer.headers.get("content-type")})
            event: dict = {}
            for line in answer.iter_lines():
                if stop.is_set():
                    return
                if not line:
                    if "event" in event:
                        received.put(event)
                    event = {}
                elif not line.startswith(":"):
                    field, _, value = line.partition(": ")
                    event[field] = orjson.loads(value) if field == "data" else value

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield received
    finally:
        stop.set()
        client.close()


def wait_event(received: "queue.Queue[dict]", predicate, timeout: float = 10) -> dict:  # type: ignore[no-untyped-def]
    while True:
        event = received.get(timeout=timeout)
        if predicate(event):
            return event


class Clients:
    """``count`` clients polling through nginx as a script polls its job: ``GET /jobs/{id}`` of a job of
    theirs, then ``GET /jobs?expand``, again and again; every answer that is not a 200 is a failure."""

    def __init__(self, cluster: ClusterState, job_ids: list[str], count: int, actions: bool = False) -> None:
        self._url = cluster.orthanc_lb_url
        self._job_ids = job_ids
        self._count = count
        self._actions = actions
        self.answered = 0
        self.failures: list[str] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> "Clients":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join(60)

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=self._count, max_keepalive_connections=self._count)
        async with httpx.AsyncClient(base_url=self._url, auth=DEMO_USER, timeout=30, limits=limits) as client:
            await asyncio.gather(*(self._client(client, n) for n in range(self._count)))

    async def _client(self, client: httpx.AsyncClient, number: int) -> None:
        job_id = self._job_ids[number % len(self._job_ids)]
        while not self._stopping.is_set():
            for path, params in ((f"/jobs/{job_id}", None), ("/jobs", {"expand": ""})):
                try:
                    if self._actions:  # pausing a finished job: Orthanc answers {} (forwarded to its owner)
                        answer = await client.post(f"/jobs/{job_id}/pause", json={})
                    else:
                        answer = await client.get(path, params=params)
                    if answer.status_code == 200:
                        self.answered += 1
                    else:
                        self.failures.append(f"{path}: {answer.status_code} {answer.text[:200]}")
                except httpx.HTTPError as error:
                    self.failures.append(f"{path}: {error!r}")
            await asyncio.sleep(0.05)


class JobMaker:
    """Creates an asynchronous archive through the load balancer (so on every server in turn) every 0.2 s."""

    def __init__(self, cluster: ClusterState, studies: list[str]) -> None:
        self._lb = httpx.Client(base_url=cluster.orthanc_lb_url, auth=DEMO_USER, timeout=30)
        self._studies = studies
        self.ids: list[str] = []
        self.answered_at: dict[str, float] = {}  # when each creation was answered (time.monotonic())
        self.failures: list[str] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "JobMaker":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join(30)
        self._lb.close()

    def _run(self) -> None:
        while not self._stopping.wait(0.2):
            study = self._studies[(len(self.ids) + len(self.failures)) % len(self._studies)]
            try:
                job_id = create_async_job(self._lb, "archive", study)
                self.answered_at[job_id] = time.monotonic()
                self.ids.append(job_id)
            except (AssertionError, httpx.HTTPError) as error:  # Orthanc's own route, not the job-service's
                self.failures.append(repr(error)[:300])


class Unfinished:
    """On one server: a C-STORE that never ends (Running), an archive behind it (Pending), a paused one."""

    def __init__(self, client: httpx.Client, lb: httpx.Client, label: str) -> None:
        self.client = client
        study, _ = create_study(client, label)
        self.modality = SilentModality()
        self.running = self.modality.store(client, study)
        wait_job_state(lb, self.running, {"Running"})  # as the job-service sees it
        self.pending = create_async_job(client, "archive", study)
        self.paused = create_async_job(client, "archive", study)
        assert lb.post(f"/jobs/{self.paused}/pause").status_code == 200
        self.ids = [self.running, self.pending, self.paused]

    def release(self) -> None:
        """Let the C-STORE fail; the paused job stays unfinished."""
        self.modality.close()

"""A hospital network's scale, simulated: hundreds of Orthanc servers and a million jobs (issue #14).

    .venv/bin/python -m bench.scale            # make bench-scale: 50, 150 and 500 servers
    .venv/bin/python -m bench.scale --quick    # the test suite: 10 servers, 2,500 jobs

The job-service runs as in production (``orthanc-jobs serve``, its history in SQLite, default settings but
the history's size). One asyncio process (aiohttp) plays every server, in both of its parts:
- its plugin: registers, sends a heartbeat every 2 s (the plugin's default), and job events carrying real
  job JSON captured from Orthanc 1.12.7 (bench/data, bench/capture_jobs.py), given new ids and times;
- its Orthanc: answers the job-service's calls on a port of its own (``GET /jobs`` for the credentials
  check, ``GET /jobs?expand`` for resynchronisations, ``GET /jobs/{id}`` for polls and look-ups,
  ``GET /system``), holding what Orthanc holds: its unfinished jobs and its last 10 finished ones
  (``JobsHistorySize``), refusing credentials other than the cluster's.

For each number of servers N: 2,000 N finished jobs go into the history (1,000,000 for 500 servers),
then, once the first resynchronisation of every server has filed away what they no longer hold, figures:
the job-service's CPU with heartbeats only, then with 2 N running jobs (polled every second), its memory,
listings and the servers' list (wrk, one connection, straight to the service), the dashboard's first load
(the four requests it makes), and the time to ``/readyz`` after a restart. Written to
bench/results/scale.json and printed as a table.
"""

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from aiohttp import web

from bench.measure import AUTHORIZATION, cpu_seconds, rss_mb, wrk
from orthanc_jobs import INTERNAL_PREFIX, SERVICE_PREFIX
from orthanc_jobs.core.model import orthanc_timestamp, plugin_secret_for

RESULTS = Path(__file__).parent / "results"
CAPTURED = Path(__file__).parent / "data" / "jobs-1.12.7.json"
HEARTBEAT = 2.0  # the plugin's default HeartbeatInterval
HISTORY_SIZE = 10  # Orthanc's default JobsHistorySize
JOBS_PER_SERVER = 2_000
RUNNING_PER_SERVER = 2
SECRET = "bench-scale-secret"
NOT_FOUND = b'{"HttpError":"Not Found","HttpStatus":404,"Message":"Unknown resource","OrthancStatus":17}'
UNAUTHORIZED = b'{"HttpError":"Unauthorized","HttpStatus":401,"OrthancStatus":30}'


class Server:
    """One simulated Orthanc server and its plugin."""

    def __init__(self, number: int) -> None:
        # Bound at once and kept: a port found free, closed and bound again later may be taken meanwhile.
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(1024)
        self.socket.setblocking(False)
        port = int(self.socket.getsockname()[1])
        self.name = f"sim-{number}"
        self.url = f"http://127.0.0.1:{port}"
        self.port = port
        self.incarnation = str(uuid.uuid4())
        self.headers = {
            "Authorization": f"Bearer {plugin_secret_for(SECRET, self.url)}",
            "X-Orthanc-Jobs-Server": self.url,
        }
        self.running: dict[str, bytes] = {}
        self.finished: dict[str, bytes] = {}  # the last HISTORY_SIZE, oldest first

    def finish(self, job_id: str, body: bytes) -> None:
        self.running.pop(job_id, None)
        self.finished[job_id] = body
        while len(self.finished) > HISTORY_SIZE:
            del self.finished[next(iter(self.finished))]

    def job(self, job_id: str) -> bytes | None:
        return self.running.get(job_id) or self.finished.get(job_id)

    # ---- as Orthanc ------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        authorization = request.headers.get("Authorization", "")
        if authorization.startswith("Basic") and authorization != AUTHORIZATION:
            return web.Response(status=401, body=UNAUTHORIZED, content_type="application/json")
        path = request.path
        if path == "/system":
            body = json.dumps({"Name": self.name, "Version": "1.12.7", "ApiVersion": 27}).encode()
        elif path == "/jobs":
            if "expand" in request.query:
                body = b"[" + b",".join([*self.running.values(), *self.finished.values()]) + b"]"
            else:
                body = json.dumps([*self.running, *self.finished]).encode()
        elif path.startswith("/jobs/") and (job := self.job(path[len("/jobs/") :])) is not None:
            body = job
        else:
            return web.Response(status=404, body=NOT_FOUND, content_type="application/json")
        return web.Response(body=body, content_type="application/json")


class Fleet:
    """Every simulated server, their Orthanc side listening, their plugins sending."""

    def __init__(self, count: int, service_url: str) -> None:
        self.service = service_url + INTERNAL_PREFIX
        self.servers = [Server(n + 1) for n in range(count)]
        self.templates = json.loads(CAPTURED.read_text())
        self.runners: list[web.AppRunner] = []
        self.session: aiohttp.ClientSession | None = None
        self.heartbeats: asyncio.Task[None] | None = None
        self.clock = time.time() - 30 * 86400  # the history starts a month ago
        self.sent = 0
        self.missed_heartbeats = 0
        self.in_flight: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        for server in self.servers:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", server.handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.SockSite(runner, server.socket).start()
            self.runners.append(runner)
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        for server in self.servers:
            identity = {
                "Name": server.name,
                "Url": server.url,
                "Incarnation": server.incarnation,
                "Token": "Bearer simulated",
                "OrthancVersion": "1.12.7",
                "PluginVersion": "2",
            }
            await self._post(server, "/register", json.dumps(identity).encode())
        self.heartbeats = asyncio.create_task(self._beat())

    async def stop(self) -> None:
        if self.heartbeats is not None:
            self.heartbeats.cancel()
        if self.session is not None:
            await self.session.close()
        for runner in self.runners:
            await runner.cleanup()

    async def _post(self, server: Server, route: str, body: bytes) -> None:
        assert self.session is not None
        async with self.session.post(self.service + route, data=body, headers=server.headers) as answer:
            await answer.read()
            if answer.status != 200:
                raise RuntimeError(f"{route} of {server.name}: {answer.status}")

    async def _beat(self) -> None:
        """Every server's heartbeat every HEARTBEAT seconds, spread evenly (as the plugins' clocks are)."""
        beat = {
            server.name: json.dumps({"Incarnation": server.incarnation}).encode() for server in self.servers
        }
        gap = HEARTBEAT / len(self.servers)
        while True:
            started = time.monotonic()
            for n, server in enumerate(self.servers):
                task = asyncio.create_task(self._heartbeat(server, beat[server.name]))
                self.in_flight.add(task)
                task.add_done_callback(self.in_flight.discard)
                await asyncio.sleep(max(0.0, started + (n + 1) * gap - time.monotonic()))

    async def _heartbeat(self, server: Server, body: bytes) -> None:
        try:
            await self._post(server, "/heartbeat", body)
        except (aiohttp.ClientError, RuntimeError):
            self.missed_heartbeats += 1  # the service restarting

    def _made(self, state: str) -> tuple[str, bytes]:
        """A job in ``state``, from a captured one, with its own id and times."""
        self.clock += 0.01
        candidates = [t for t in self.templates if (t["State"] == "Running") == (state == "Running")]
        job = dict(random.choice(candidates), ID=str(uuid.uuid4()))
        stamp = orthanc_timestamp(self.clock)
        job.update(CreationTime=stamp, Timestamp=stamp)
        if state != "Running":
            job.update(State=state, CompletionTime=orthanc_timestamp(self.clock + 5))
            if state == "Success":
                job.update(ErrorCode=0, ErrorDescription="Success", Progress=100)
        return job["ID"], json.dumps(job, separators=(",", ":")).encode()

    async def history(self, per_server: int) -> float:
        """``per_server`` finished jobs on every server, as JOB_SUCCESS / JOB_FAILURE events in batches of
        500 (four servers sending at once); events per second."""
        started = time.monotonic()
        queue: asyncio.Queue[Server] = asyncio.Queue()
        for server in self.servers:
            queue.put_nowait(server)

        async def sender() -> None:
            while not queue.empty():
                server = queue.get_nowait()
                left = per_server
                while left:
                    events = []
                    for _ in range(min(500, left)):
                        state = "Failure" if random.random() < 0.05 else "Success"
                        job_id, body = self._made(state)
                        server.finish(job_id, body)
                        head = json.dumps(
                            {"Type": f"JOB_{state.upper()}", "JobId": job_id, "Time": self.clock}
                        )
                        events.append(head[:-1].encode() + b', "Job": ' + body + b"}")
                    await self._post(server, "/events", _batch(server, events))
                    left -= len(events)
                    self.sent += len(events)

        await asyncio.gather(*(sender() for _ in range(4)))
        return self.sent / (time.monotonic() - started)

    async def run_jobs(self, per_server: int) -> None:
        """``per_server`` running jobs on every server (JOB_SUBMITTED with the job's JSON)."""
        for server in self.servers:
            events = []
            for _ in range(per_server):
                job_id, body = self._made("Running")
                server.running[job_id] = body
                head = json.dumps({"Type": "JOB_SUBMITTED", "JobId": job_id, "Time": time.time()})
                events.append(head[:-1].encode() + b', "Job": ' + body + b"}")
            await self._post(server, "/events", _batch(server, events))


def _batch(server: Server, events: list[bytes]) -> bytes:
    return b'{"Incarnation": "' + server.incarnation.encode() + b'", "Events": [' + b",".join(events) + b"]}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Service:
    """The job-service, as ``orthanc-jobs serve`` runs it."""

    def __init__(self, directory: Path, history_max_jobs: int, resync_interval: float) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = directory / "job-service.log"
        self.env = dict(
            os.environ,
            ORTHANC_JOBS_SECRET=SECRET,
            ORTHANC_JOBS_PORT=str(self.port),
            ORTHANC_JOBS_DATABASE=str(directory / "history.sqlite3"),
            ORTHANC_JOBS_HISTORY_MAX_JOBS=str(history_max_jobs),
            ORTHANC_JOBS_RESYNC_INTERVAL=str(resync_interval),
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start, and wait for ``/readyz`` 200 (its history loaded, a server reached): seconds taken."""
        started = time.monotonic()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "orthanc_jobs", "serve", "--log-level", "warning"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the job-service exited; see {self.log}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)

    def cpu_seconds(self) -> float:
        assert self.process is not None
        return cpu_seconds(self.process.pid)

    def rss_mb(self) -> float:
        assert self.process is not None
        return round(rss_mb(self.process.pid), 1)

    async def cpu_percent(self, seconds: float) -> float:
        before = self.cpu_seconds()
        await asyncio.sleep(seconds)
        return round((self.cpu_seconds() - before) / seconds * 100, 1)

    async def wait_quiet(self, below: float, timeout: float) -> None:
        """Until the service's CPU over 2 s is under ``below`` % (what it was given is written)."""
        deadline = time.monotonic() + timeout
        while await self.cpu_percent(2) > below and time.monotonic() < deadline:
            pass


async def _wrk(url: str, seconds: int) -> dict[str, float]:
    return await asyncio.to_thread(wrk, url, 1, seconds)


async def measure(servers: int, quick: bool, per_server: int | None = None) -> dict[str, Any]:
    per_server = per_server or (250 if quick else JOBS_PER_SERVER)
    directory = Path(tempfile.mkdtemp(prefix="orthanc-jobs-scale-"))
    # The default resynchronisation interval (30 s); shorter in the quick form, which only checks that the
    # benchmark works.
    resync = 5.0 if quick else 30.0
    service = Service(directory, history_max_jobs=servers * per_server * 2, resync_interval=resync)
    figures: dict[str, Any] = {"servers": servers, "history_jobs": servers * per_server}
    fleet = Fleet(servers, service.url)
    try:
        # Ready once a server answers it: the fleet registers as soon as the service listens.
        service_started = asyncio.create_task(asyncio.to_thread(service.start))
        await _start_fleet_when_up(fleet, service)
        await service_started
        figures["events_per_second"] = round(await fleet.history(per_server))
        # The first resynchronisation of each server (every 30 s) files away what it no longer holds.
        await asyncio.sleep(resync + 2)
        # Settled: the history's ingestion and that resynchronisation done (with 500 servers the heartbeats
        # alone take more than 10 % of a core: the bound is above that, the wait bounded).
        await service.wait_quiet(below=35, timeout=120)
        seconds = 5 if quick else 20
        figures["idle_cpu_percent"] = await service.cpu_percent(seconds)
        await fleet.run_jobs(RUNNING_PER_SERVER)
        await asyncio.sleep(3)
        figures["running_jobs"] = servers * RUNNING_PER_SERVER
        figures["cpu_percent_with_running"] = await service.cpu_percent(seconds)
        figures["rss_mb"] = service.rss_mb()
        length = 2 if quick else 3
        some = fleet.servers[len(fleet.servers) // 2].name
        reads = {
            "jobs_limit_100": "/jobs?limit=100",
            "jobs_expand_limit_100": "/jobs?expand&limit=100",
            "running": "/jobs?status=Running",
            "failures_limit_100": "/jobs?status=Failure&limit=100",
            "type_limit_100": "/jobs?type=DicomModalityStore&limit=100",
            "server_limit_100": f"/jobs?server={some}&limit=100",
            "servers": f"{SERVICE_PREFIX}/servers",
        }
        total = figures["history_jobs"] + figures["running_jobs"]
        dashboard = {
            "servers": f"{SERVICE_PREFIX}/servers",
            "stats": f"{SERVICE_PREFIX}/stats?bucket=60&window=3600",
            "first_page": "/jobs?expand&offset=0&limit=25",
            "last_page": f"/jobs?expand&offset={total - 25}&limit=25",
        }
        figures["reads"] = {name: await _wrk(service.url + path, length) for name, path in reads.items()}
        loads = {name: await _wrk(service.url + path, length) for name, path in dashboard.items()}
        figures["dashboard_first_load_ms"] = round(sum(read["p50_ms"] for read in loads.values()), 2)
        figures["dashboard_requests"] = loads
        service.stop()
        figures["time_to_ready_s"] = round(await asyncio.to_thread(service.start), 2)
        figures["rss_mb_after_restart"] = service.rss_mb()
    finally:
        service.stop()
        await fleet.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return figures


async def _start_fleet_when_up(fleet: Fleet, service: Service) -> None:
    """The fleet registers once the service listens (``/healthz``)."""
    while True:
        try:
            async with aiohttp.ClientSession() as probe, probe.get(f"{service.url}/healthz") as answer:
                if answer.status == 200:
                    break
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    await fleet.start()


def table(results: list[dict[str, Any]]) -> str:
    counts = [r["servers"] for r in results]
    lines = [f"{'figure':<44}" + "".join(f"{f'{n} servers':>14}" for n in counts) + "  target"]

    def row(name: str, values: list[object], target: str = "") -> None:
        lines.append(f"{name:<44}" + "".join(f"{v!s:>14}" for v in values) + f"  {target}")

    row("jobs in history", [r["history_jobs"] for r in results])
    row("events ingested per second", [r["events_per_second"] for r in results])
    row("CPU, heartbeats only (% of a core)", [r["idle_cpu_percent"] for r in results], "< 10")
    row("running jobs", [r["running_jobs"] for r in results])
    row("CPU with them, polled (% of a core)", [r["cpu_percent_with_running"] for r in results])
    row("memory (RSS, MB)", [r["rss_mb"] for r in results])
    for name in results[0]["reads"]:
        row(f"{name} p50 ms", [r["reads"][name]["p50_ms"] for r in results], "< 5" if "limit" in name else "")
        row("  p99 ms", [r["reads"][name]["p99_ms"] for r in results])
    row("dashboard's first load (4 requests, ms)", [r["dashboard_first_load_ms"] for r in results])
    row("restart to /readyz (s)", [r["time_to_ready_s"] for r in results], "< 3 (100,000 jobs)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: checks that the benchmark works")
    parser.add_argument("--servers", type=int, nargs="*", help="numbers of servers (default 50 150 500)")
    parser.add_argument("--jobs-per-server", type=int, help=f"finished jobs per server ({JOBS_PER_SERVER})")
    parser.add_argument("--output", type=Path, default=RESULTS / "scale.json")
    arguments = parser.parse_args()
    counts = arguments.servers or ([10] if arguments.quick else [50, 150, 500])
    started = time.monotonic()
    results = []
    for count in counts:
        print(f"{count} servers...", flush=True)
        results.append(asyncio.run(measure(count, arguments.quick, arguments.jobs_per_server)))
    output = {
        "quick": arguments.quick,
        "cores": os.cpu_count(),
        "seconds": round(time.monotonic() - started),
        "results": results,
    }
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(output, indent=2) + "\n")
    print()
    print(table(results))
    print(f"\n{output['cores']} cores; {output['seconds']} s; figures in {arguments.output}")


if __name__ == "__main__":
    main()

"""The figures of job-service replicas (issue #11): two replicas on the cluster's PostgreSQL, behind nginx.

    .venv/bin/python bench/replicas.py            # make bench
    .venv/bin/python bench/replicas.py --quick    # the test suite: it runs, figures not judged

Starts its own local cluster (3 Orthanc, 2 replicas on PostgreSQL) and measures, in the same run:
- plugin events ingested per second, sent to both replicas at once;
- cross-replica visibility: from a plugin event sent to one replica to the change answered by the other
  (p50, p99);
- ``GET /jobs/{id}`` and ``GET /jobs?expand`` through nginx, p50 at one keep-alive connection, with both
  replicas and then with one of them stopped (the single-replica reference);
- failover: 200 clients polling through nginx while one replica is killed (SIGKILL): failed requests, and
  the seconds in which the slowest answer took over a second.
Writes the figures as JSON (bench/results/replicas.json) and prints a table.
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from orthanc_jobs.cluster.demo import create_study
from orthanc_jobs.cluster.launcher import DEMO_USER, ClusterState, down, start_process, stop_process, up
from orthanc_jobs.core.model import plugin_secret_for

RESULTS = Path(__file__).parent / "results"
# A server that exists only to send events (nothing answers there: nothing is asked of it).
EVENTS_SERVER = "http://127.0.0.1:9"
STAMP = "20261128T100000.000000"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def p50_ms(client: httpx.Client, path: str, rounds: int) -> float:
    for _ in range(5):
        client.get(path)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        answer = client.get(path)
        times.append(time.perf_counter() - started)
        answer.raise_for_status()
    return round(statistics.median(times) * 1000, 3)


class ReplicaBench:
    def __init__(self, state: ClusterState, quick: bool) -> None:
        self.state = state
        self.quick = quick
        self.replicas = list(state.service_urls.values())
        self.figures: dict[str, Any] = {}
        self.headers = {
            "Authorization": f"Bearer {plugin_secret_for(state.secret, EVENTS_SERVER)}",
            "X-Orthanc-Jobs-Server": EVENTS_SERVER,
        }
        self.incarnation = f"bench-{uuid.uuid4()}"
        registration = {"Name": "bench", "Url": EVENTS_SERVER, "Incarnation": self.incarnation, "Token": "x"}
        httpx.post(self.internal(0, "register"), json=registration, headers=self.headers).raise_for_status()

    def internal(self, replica: int, route: str) -> str:
        return f"{self.replicas[replica]}/orthanc-jobs/internal/{route}"

    def event(self, job_id: str, state: str, stamp: str = STAMP) -> dict[str, Any]:
        job = {
            "ID": job_id,
            "Type": "Archive",
            "State": state,
            "Progress": 100 if state == "Success" else 10,
            "Priority": 0,
            "CreationTime": STAMP,
            "Timestamp": stamp,
            "EffectiveRuntime": 0.1,
            "ErrorCode": 0,
            "ErrorDescription": "Success",
            "Content": {"Description": "bench", "InstancesCount": 1},
        }
        kind = "JOB_SUCCESS" if state == "Success" else "JOB_SUBMITTED"
        return {"Type": kind, "JobId": job_id, "Job": job}

    def ingestion(self) -> None:
        """Events per second taken by both replicas together, batches of 500 sent to each at once."""
        seconds = 3 if self.quick else 10
        counted = [0, 0]
        deadline = time.monotonic() + seconds

        def sender(replica: int) -> None:
            with httpx.Client(timeout=30) as client:
                while time.monotonic() < deadline:
                    events = [self.event(str(uuid.uuid4()), "Success") for _ in range(500)]
                    body = json.dumps({"Incarnation": self.incarnation, "Events": events}).encode()
                    answer = client.post(self.internal(replica, "events"), content=body, headers=self.headers)
                    answer.raise_for_status()
                    counted[replica] += len(events)

        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            for future in [pool.submit(sender, n % 2) for n in range(4)]:
                future.result()
        elapsed = time.monotonic() - started
        self.figures["ingestion_2_replicas"] = {
            "events": sum(counted),
            "per_second": round(sum(counted) / elapsed),
            "per_replica": counted,
        }

    def visibility(self) -> None:
        """A job's new state sent to one replica, until the other answers it (alternating the direction)."""
        rounds = 40 if self.quick else 300
        lags = []
        readers = [httpx.Client(base_url=url, auth=DEMO_USER, timeout=30) for url in self.replicas]
        with httpx.Client(timeout=30) as sender:
            for n in range(rounds):
                to, other = n % 2, 1 - n % 2
                job_id = str(uuid.uuid4())
                body = {"Incarnation": self.incarnation, "Events": [self.event(job_id, "Running")]}
                started = time.perf_counter()
                sender.post(self.internal(to, "events"), json=body, headers=self.headers).raise_for_status()
                while readers[other].get(f"/jobs/{job_id}").status_code != 200:
                    if time.perf_counter() - started > 10:
                        raise RuntimeError(f"job {job_id} not visible on the other replica after 10 s")
                lags.append(time.perf_counter() - started)
        for reader in readers:
            reader.close()
        self.figures["cross_replica_visibility_ms"] = {
            "rounds": rounds,
            "p50": round(percentile(lags, 0.5) * 1000, 2),
            "p99": round(percentile(lags, 0.99) * 1000, 2),
            "max": round(max(lags) * 1000, 2),
        }

    def reads(self, job_id: str, label: str) -> None:
        rounds = 100 if self.quick else 2000
        with httpx.Client(base_url=self.state.orthanc_lb_url, auth=DEMO_USER, timeout=30) as lb:
            self.figures[f"get_job_p50_ms_{label}"] = p50_ms(lb, f"/jobs/{job_id}", rounds)
            self.figures[f"expand_p50_ms_{label}"] = p50_ms(lb, "/jobs?expand", max(20, rounds // 20))

    def failover(self, job_ids: list[str], victim: str) -> None:
        """200 clients polling through nginx; one replica killed after a third of the time, started again."""
        seconds = 9 if self.quick else 30
        clients = 50 if self.quick else 200
        per_second: dict[int, list[float]] = defaultdict(list)
        failures: list[str] = []
        stopping = threading.Event()
        started = time.monotonic()

        async def client(http: httpx.AsyncClient, number: int) -> None:
            path = f"/jobs/{job_ids[number % len(job_ids)]}"
            while not stopping.is_set():
                sent = time.monotonic()
                try:
                    answer = await http.get(path)
                    if answer.status_code != 200:
                        failures.append(f"{answer.status_code}")
                except httpx.HTTPError as error:
                    failures.append(repr(error))
                per_second[int(sent - started)].append(time.monotonic() - sent)
                await asyncio.sleep(0.05)

        async def load() -> None:
            limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
            async with httpx.AsyncClient(
                base_url=self.state.orthanc_lb_url, auth=DEMO_USER, timeout=30, limits=limits
            ) as http:
                await asyncio.gather(*(client(http, n) for n in range(clients)))

        thread = threading.Thread(target=lambda: asyncio.run(load()), daemon=True)
        thread.start()
        time.sleep(seconds / 3)
        pid = next(p.pid for p in ClusterState.load(Path(self.state.directory)).processes if p.name == victim)
        os.kill(pid, signal.SIGKILL)
        time.sleep(seconds / 3)
        start_process(Path(self.state.directory), victim)
        time.sleep(seconds / 3)
        stopping.set()
        thread.join(60)
        slow = sorted(second for second, times in per_second.items() if max(times) > 1.0)
        self.figures["failover"] = {
            "clients": clients,
            "requests": sum(len(times) for times in per_second.values()),
            "failed": len(failures),
            "failures": failures[:5],
            "seconds_slower_than_1s": len(slow),
            "p99_ms": round(percentile([t for times in per_second.values() for t in times], 0.99) * 1000, 2),
        }


def table(figures: dict[str, Any]) -> str:
    lines = ["| figure | measured | target |", "|---|---|---|"]
    if ingestion := figures.get("ingestion_2_replicas"):
        lines.append(
            f"| plugin events ingested, 2 replicas | {ingestion['per_second']:,} / s | >= 2,000 / s |"
        )
    if seen := figures.get("cross_replica_visibility_ms"):
        lines.append(
            f"| cross-replica visibility (p50 / p99 of {seen['rounds']}) | {seen['p50']} / {seen['p99']} ms "
            "| p99 <= 100 ms |"
        )
    for name, label in (("get_job", "`GET /jobs/{id}`"), ("expand", "`GET /jobs?expand`")):
        two, one = figures.get(f"{name}_p50_ms_2_replicas"), figures.get(f"{name}_p50_ms_1_replica")
        if two and one:
            lines.append(
                f"| {label} p50, 2 replicas / 1 | {two} / {one} ms (x{two / one:.2f}) | within 10 % |"
            )
    if failover := figures.get("failover"):
        lines.append(
            f"| replica killed under {failover['clients']} clients: failed of {failover['requests']:,} "
            f"| {failover['failed']} | 0 |"
        )
        lines.append(f"| seconds with an answer over 1 s | {failover['seconds_slower_than_1s']} | 0 |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: checks that it works")
    parser.add_argument("--output", type=Path, default=RESULTS / "replicas.json")
    arguments = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="orthanc-jobs-bench-replicas-"))
    started = time.monotonic()
    state = up(
        directory,
        lb_port=0,
        service_replicas=2,
        service_database="postgresql",
        service_settings={"allowed_server_urls": EVENTS_SERVER},
        say=lambda *_: None,
    )
    try:
        bench = ReplicaBench(state, arguments.quick)
        with httpx.Client(base_url=state.orthanc_lb_url, auth=DEMO_USER, timeout=60) as lb:
            study, _ = create_study(lb, "REPLICAS")
            job_ids = []
            for _ in range(3):
                job_ids.append(lb.post(f"/studies/{study}/archive", json={"Asynchronous": True}).json()["ID"])
            while any(lb.get(f"/jobs/{job_id}").json()["State"] != "Success" for job_id in job_ids):
                time.sleep(0.1)
        bench.reads(job_ids[0], "2_replicas")
        stop_process(directory, "job-service-2")
        bench.reads(job_ids[0], "1_replica")
        start_process(directory, "job-service-2")
        bench.visibility()
        bench.failover(job_ids, "job-service-2")
        bench.ingestion()
        result = {"quick": arguments.quick, "cores": os.cpu_count(), "figures": bench.figures}
        result["seconds"] = round(time.monotonic() - started)
    finally:
        down(directory, say=lambda *_: None)
        shutil.rmtree(directory, ignore_errors=True)
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(result, indent=2) + "\n")
    print(table(bench.figures))
    print(f"\n{result['cores']} cores; {result['seconds']} s; figures in {arguments.output}")


if __name__ == "__main__":
    sys.exit(main())

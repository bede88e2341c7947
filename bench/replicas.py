"""The figures of job-service replicas (issue #11): two replicas on the cluster's PostgreSQL, behind nginx.

    .venv/bin/python -m bench.replicas            # make bench
    .venv/bin/python -m bench.replicas --quick    # the test suite: it runs, figures not judged

Starts its own local clusters (3 Orthanc on PostgreSQL; one replica of the job-service, then two) and
measures, in the same run:
- ``GET /jobs/{id}`` through nginx with one replica and with two, against nginx to the job's owner in
  the same run (wrk, 1 and 50 connections, interleaved rounds: requests/s, p50 and p99), and the CPU that
  the replicas and nginx spend per request; ``GET /jobs?expand`` at one connection;
- plugin events ingested per second, sent to both replicas at once;
- cross-replica visibility: from a plugin event sent to one replica to the change answered by the other
  (p50, p99);
- failover: wrk with 200 connections through nginx, one-second slices for 30 s, one replica killed
  (SIGKILL) after 10 s and started again after 20 s: failed requests, and the seconds of degraded service
  (a slice with a failure, or whose p99 is over three times the median p99 before the kill), and the
  seconds worse than one replica alone under the same load (measured in the one-replica cluster).
wrk is the load generator: its own cost is small next to the servers' (one thread per core, C, epoll).
Writes the figures as JSON (bench/results/replicas.json) and prints a table.
"""

import argparse
import contextlib
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
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.measure import against_owner, cpu_seconds, percentile, wrk
from orthanc_jobs.cluster.demo import create_study
from orthanc_jobs.cluster.launcher import DEMO_USER, ClusterState, down, start_process, up
from orthanc_jobs.core.model import plugin_secret_for

RESULTS = Path(__file__).parent / "results"
# A server that exists only to send events (nothing answers there: nothing is asked of it).
EVENTS_SERVER = "http://127.0.0.1:9"
STAMP = "20261128T100000.000000"
FAILOVER_CONNECTIONS = 200


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
        reads(self.state, job_id, label, self.quick, self.figures)

    def failover(self, job_id: str, victim: str) -> None:
        """wrk through nginx in one-second slices; one replica killed after a third of them, started again
        after two thirds (the start runs beside the slices)."""
        slices = 9 if self.quick else 30
        connections = 50 if self.quick else FAILOVER_CONNECTIONS
        url = f"{self.state.orthanc_lb_url}/jobs/{job_id}"
        measured = []
        restart: threading.Thread | None = None
        for second in range(slices):
            if second == slices // 3:
                process = next(
                    p for p in ClusterState.load(Path(self.state.directory)).processes if p.name == victim
                )
                os.kill(process.pid, signal.SIGKILL)
            if second == 2 * slices // 3:
                directory = Path(self.state.directory)
                restart = threading.Thread(target=start_process, args=(directory, victim), daemon=True)
                restart.start()
            measured.append(wrk(url, connections, 1))
        if restart is not None:
            restart.join(60)
        usual = round(statistics.median(m["p99_ms"] for m in measured[: slices // 3]), 2)
        degraded = [n for n, m in enumerate(measured) if m["failed"] or m["p99_ms"] > 3 * usual]
        # The same, against what one replica alone gives under this load (the one-replica cluster's figure):
        # a replica lost leaves the others its share of the load, no worse than that is expected.
        alone = self.figures.get(f"get_job_{FAILOVER_CONNECTIONS}_1_replica", {}).get("p99_ms", usual)
        worse_than_one = [
            n for n, m in enumerate(measured) if m["failed"] or m["p99_ms"] > 3 * max(usual, alone)
        ]
        self.figures["failover"] = {
            "connections": connections,
            "requests": sum(m["requests_per_s"] for m in measured),
            "failed": sum(m["failed"] for m in measured),
            "degraded_seconds": degraded,
            "p99_ms_one_replica_alone": alone,
            "worse_than_one_replica_seconds": worse_than_one,
            "p99_ms_before": usual,
            "p99_ms_each_second": [m["p99_ms"] for m in measured],
        }


def reads(state: ClusterState, job_id: str, label: str, quick: bool, figures: dict[str, Any]) -> None:
    """A completed job through nginx to the job-service and, as the reference, through nginx to its owner
    (a keep-alive upstream as the job-service's), at 1 and 50 connections in interleaved rounds (wrk); the
    CPU the replicas and nginx spent per request of the job-service's path; the listing at one
    connection."""
    rounds, seconds = (1, 1) if quick else (5, 3)
    with httpx.Client(auth=DEMO_USER) as client:
        owner = client.get(f"{state.orthanc_lb_url}/jobs/{job_id}").json()["Server"]["Name"]
    urls = {
        "nginx_owner": f"{state.lb_url}/{owner}/jobs/{job_id}",
        "nginx_service": f"{state.orthanc_lb_url}/jobs/{job_id}",
    }
    for connections in (1, 50):
        figures[f"get_job_{connections}_{label}"] = against_owner(urls, connections, rounds, seconds)
    replicas = [p.pid for p in state.processes if p.name.startswith("job-service")]
    balancer = [pid for p in state.processes if p.name == "nginx" for pid in (p.pid, *children(p.pid))]
    before = [sum(map(cpu_seconds, pids)) for pids in (replicas, balancer)]
    run = wrk(urls["nginx_service"], 50, seconds * 2)
    after = [sum(map(cpu_seconds, pids)) for pids in (replicas, balancer)]
    requests = run["requests_per_s"] * seconds * 2
    figures[f"cpu_per_request_us_{label}"] = {
        "job_service": round((after[0] - before[0]) / requests * 1e6, 1),
        "nginx": round((after[1] - before[1]) / requests * 1e6, 1),
        "wrk": run["client_cpu_us"],
        "requests_per_s": run["requests_per_s"],
    }
    figures[f"expand_{label}"] = wrk(f"{state.orthanc_lb_url}/jobs?expand", 1, seconds * 2)
    # What the failover benchmark's load gives when every request goes to the replicas left.
    figures[f"get_job_{FAILOVER_CONNECTIONS}_{label}"] = wrk(
        urls["nginx_service"], FAILOVER_CONNECTIONS, seconds
    )


def children(pid: int) -> list[int]:
    """The processes a process started (nginx's workers)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def completed_jobs(state: ClusterState, count: int = 3) -> list[str]:
    with httpx.Client(base_url=state.orthanc_lb_url, auth=DEMO_USER, timeout=60) as lb:
        study, _ = create_study(lb, "REPLICAS")
        job_ids = [
            lb.post(f"/studies/{study}/archive", json={"Asynchronous": True}).json()["ID"]
            for _ in range(count)
        ]
        while any(lb.get(f"/jobs/{job_id}").json()["State"] != "Success" for job_id in job_ids):
            time.sleep(0.1)
    return job_ids


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
    for replicas, label, target in ((1, "1_replica", 0.75), (2, "2_replicas", 1.0)):
        if at_50 := figures.get(f"get_job_50_{label}"):
            service, owner = at_50["nginx_service"], at_50["nginx_owner"]
            lines.append(
                f"| `GET /jobs/{{id}}`, 50 connections, {replicas} replica(s) / nginx -> owner: requests/s "
                f"(p99) | {service['requests_per_s']:,} ({service['p99_ms']} ms) / "
                f"{owner['requests_per_s']:,} ({owner['p99_ms']} ms), x{at_50['throughput_ratio']:.2f} "
                f"| >= {target:.2f}x, p99 no worse |"
            )
        if at_1 := figures.get(f"get_job_1_{label}"):
            service, owner = at_1["nginx_service"], at_1["nginx_owner"]
            lines.append(
                f"| `GET /jobs/{{id}}`, 1 connection, {replicas} replica(s) / nginx -> owner: p50 | "
                f"{service['p50_ms']} / {owner['p50_ms']} ms, x{at_1['p50_ratio']:.2f} | <= 1.0x |"
            )
        if cpu := figures.get(f"cpu_per_request_us_{label}"):
            lines.append(
                f"| CPU per request at 50 connections, {replicas} replica(s): job-service / nginx / wrk | "
                f"{cpu['job_service']} / {cpu['nginx']} / {cpu['wrk']} us | |"
            )
    two, one = figures.get("expand_2_replicas"), figures.get("expand_1_replica")
    if two and one:
        lines.append(
            f"| `GET /jobs?expand`, 1 connection, p50 (p99): 2 replicas / 1 | "
            f"{two['p50_ms']} ({two['p99_ms']}) / {one['p50_ms']} ({one['p99_ms']}) ms, "
            f"x{two['p50_ms'] / one['p50_ms']:.2f} | within 10 % |"
        )
    if failover := figures.get("failover"):
        lines.append(
            f"| replica killed under {failover['connections']} connections: failed of "
            f"{failover['requests']:,} | {failover['failed']} | 0 |"
        )
        lines.append(
            f"| seconds degraded (a failure, or p99 over 3 x {failover['p99_ms_before']} ms) "
            f"| {len(failover['degraded_seconds'])} | 0 |"
        )
        lines.append(
            f"| seconds worse than one replica alone (a failure, or p99 over 3 x "
            f"{failover['p99_ms_one_replica_alone']} ms) "
            f"| {len(failover['worse_than_one_replica_seconds'])} | 0 |"
        )
    return "\n".join(lines)


@contextlib.contextmanager
def cluster(replicas: int) -> Iterator[ClusterState]:
    """A local cluster whose job-service keeps its history in the cluster's PostgreSQL, ``replicas`` of it."""
    directory = Path(tempfile.mkdtemp(prefix=f"orthanc-jobs-bench-replicas-{replicas}-"))
    state = up(
        directory,
        lb_port=0,
        service_replicas=replicas,
        service_database="postgresql",
        service_settings={"allowed_server_urls": EVENTS_SERVER},
        say=lambda *_: None,
    )
    try:
        yield state
    finally:
        down(directory, say=lambda *_: None)
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: checks that it works")
    parser.add_argument("--output", type=Path, default=RESULTS / "replicas.json")
    arguments = parser.parse_args()
    started = time.monotonic()
    figures: dict[str, Any] = {}
    with cluster(1) as state:
        reads(state, completed_jobs(state)[0], "1_replica", arguments.quick, figures)
    with cluster(2) as state:
        bench = ReplicaBench(state, arguments.quick)
        bench.figures = figures
        job_ids = completed_jobs(state)
        bench.reads(job_ids[0], "2_replicas")
        bench.visibility()
        bench.failover(job_ids[0], "job-service-2")
        bench.ingestion()
    result = {
        "quick": arguments.quick,
        "cores": os.cpu_count(),
        "seconds": round(time.monotonic() - started),
        "figures": figures,
    }
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(result, indent=2) + "\n")
    print(table(figures))
    print(f"\n{result['cores']} cores; {result['seconds']} s; figures in {arguments.output}")


if __name__ == "__main__":
    sys.exit(main())

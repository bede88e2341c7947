"""Load: many clients polling the jobs API through the load balancer while jobs run on every server.

    .venv/bin/python bench/load.py [--clients 200] [--seconds 60]

Starts its own local cluster, keeps jobs running on every Orthanc, and has ``--clients`` clients poll
``GET /jobs/{id}`` (three in four) and ``GET /jobs?expand`` (one in four) through nginx, each every
``--interval`` seconds. Prints the answers by status, errors and latencies as JSON. The test suite runs
the same in a short form (tests/e2e/test_load.py).
"""

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx

from orthanc_jobs.cluster.demo import create_study
from orthanc_jobs.cluster.launcher import DEMO_USER, ClusterState, down, up


@dataclass
class LoadResult:
    clients: int
    seconds: float
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    jobs_created: int = 0

    @property
    def server_errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status >= 500)

    def summary(self) -> dict[str, object]:
        ordered = sorted(self.latencies_ms) or [0.0]
        return {
            "clients": self.clients,
            "seconds": self.seconds,
            "cores": os.cpu_count(),
            "requests": sum(self.statuses.values()),
            "requests_per_second": round(sum(self.statuses.values()) / self.seconds),
            "statuses": dict(sorted(self.statuses.items())),
            "errors": dict(self.errors),
            "server_errors": self.server_errors,
            "latency_ms": {
                "p50": round(statistics.median(ordered), 2),
                "p99": round(ordered[int(len(ordered) * 0.99) - 1], 2),
                "max": round(ordered[-1], 2),
            },
            "jobs_created_meanwhile": self.jobs_created,
        }


def keep_jobs_running(lb_url: str, stop: threading.Event, created: list[str]) -> None:
    """Create async archive jobs through the load balancer until told to stop (they land everywhere)."""
    with httpx.Client(base_url=lb_url, auth=DEMO_USER, timeout=30) as client:
        study, _ = create_study(client, "LOAD", instances=3)
        while not stop.is_set():
            answer = client.post(f"/studies/{study}/archive", json={"Asynchronous": True})
            if answer.status_code == 200:
                created.append(answer.json()["ID"])
            time.sleep(0.05)


async def poll(lb_url: str, clients: int, seconds: float, interval: float, created: list[str]) -> LoadResult:
    # aiohttp rather than httpx here: httpx's pool slows down past a few dozen concurrent connections, and
    # the load generator must not be what is measured.
    result = LoadResult(clients, seconds)
    deadline = time.monotonic() + seconds
    headers = {"Authorization": aiohttp.encode_basic_auth(*DEMO_USER)}
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(lb_url, headers=headers, connector=connector, timeout=timeout) as http:

        async def client(number: int) -> None:
            rng = random.Random(number)
            await asyncio.sleep(rng.random() * interval)
            while time.monotonic() < deadline:
                if created and rng.random() < 0.75:
                    path = f"/orthanc/jobs/{rng.choice(created[-200:])}"
                else:
                    path = "/orthanc/jobs?expand"
                started = time.perf_counter()
                try:
                    async with http.get(path) as answer:
                        await answer.read()
                        result.statuses[answer.status] += 1
                except (aiohttp.ClientError, TimeoutError) as error:
                    result.errors[type(error).__name__] += 1
                result.latencies_ms.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(interval)

        await asyncio.gather(*(client(n) for n in range(clients)))
    return result


def run_load(lb_url: str, clients: int, seconds: float, interval: float = 0.1) -> LoadResult:
    """Poll the load balancer at ``lb_url`` with ``clients`` clients while jobs are made through it."""
    stop = threading.Event()
    created: list[str] = []
    creator = threading.Thread(
        target=keep_jobs_running, args=(lb_url + "/orthanc", stop, created), daemon=True
    )
    creator.start()
    try:
        time.sleep(0.5)
        result = asyncio.run(poll(lb_url, clients, seconds, interval, created))
    finally:
        stop.set()
        creator.join(30)
    result.jobs_created = len(created)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between two polls of a client")
    arguments = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="orthanc-jobs-load-"))
    state: ClusterState = up(directory, lb_port=0, say=lambda *_: None)
    try:
        result = run_load(state.lb_url, arguments.clients, arguments.seconds, arguments.interval)
    finally:
        down(directory, say=lambda *_: None)
        shutil.rmtree(directory, ignore_errors=True)
    print(json.dumps(result.summary(), indent=2))


if __name__ == "__main__":
    main()

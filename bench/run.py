"""The benchmark suite: the job-service against Orthanc itself, side by side, in one run.

    .venv/bin/python -m bench.run            # full: 1,000 and 10,000 jobs, a 500 MB archive (make bench)
    .venv/bin/python -m bench.run --quick    # small sizes, to check it still works (the test suite)

Starts its own local cluster, creates real jobs, and measures each figure next to its reference: the same
request sent straight to the Orthanc that owns the data, through the same nginx (its per-server path).
Machines are noisy: figures are medians over many rounds, and ratios to the reference of the same run.
Prints a table and writes the same figures as JSON (bench/results/latest.json).
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from base64 import b64encode
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.measure import against_owner, cpu_seconds, percentile, rss_mb
from orthanc_jobs import __version__
from orthanc_jobs.cluster.demo import create_study
from orthanc_jobs.cluster.launcher import DEMO_USER, ClusterState, down, start_process, stop_process, up
from orthanc_jobs.core.model import plugin_secret_for
from orthanc_jobs.core.registry import Registry
from orthanc_jobs.core.store import SqliteStore

RESULTS = Path(__file__).parent / "results"
TERMINAL = {"Success", "Failure"}
# A server that exists only to send events (nothing answers there: nothing is asked of it).
INGESTION_SERVER = "http://127.0.0.1:9"
# Jobs in the history when the job-service is started again (the full run; issue #14's figure).
HISTORY_AT_START = 100_000


def p50_ms(client: httpx.Client, path: str, rounds: int, warm: int = 3) -> float:
    for _ in range(warm):
        client.get(path).raise_for_status()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        client.get(path).raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


class Bench:
    def __init__(self, state: ClusterState, quick: bool) -> None:
        self.state = state
        self.quick = quick
        self.lb = httpx.Client(base_url=state.orthanc_lb_url, auth=DEMO_USER, timeout=120)
        self.direct = {
            name: httpx.Client(base_url=f"{state.lb_url}/{name}", auth=DEMO_USER, timeout=120)
            for name in state.orthanc_urls
        }
        self.service_pid = next(p.pid for p in state.processes if p.role == "job-service")
        self.figures: dict[str, Any] = {}

    def say(self, text: str) -> None:
        print(text, flush=True)

    # ---- jobs ----------------------------------------------------------------------------------------

    def create_jobs(self, server: str, study: str, count: int) -> list[str]:
        client = self.direct[server]

        def create(_: int) -> str:
            answer = client.post(f"/studies/{study}/archive", json={"Asynchronous": True})
            answer.raise_for_status()
            return str(answer.json()["ID"])

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(create, range(count)))

    def wait_all_finished(self, server: str, expected: int) -> None:
        def finished() -> bool:
            jobs = self.direct[server].get("/jobs?expand").json()
            return len(jobs) >= expected and all(job["State"] in TERMINAL for job in jobs)

        deadline = time.monotonic() + 600
        while not finished():
            if time.monotonic() > deadline:
                raise RuntimeError(f"jobs of {server} not finished")
            time.sleep(1)

    # ---- figures -------------------------------------------------------------------------------------

    def listed_after_creation(self, study: str) -> None:
        """From the answer to an asynchronous archive's creation through nginx (so on any server) to the
        sending of the first ``GET /jobs`` through nginx that lists it (the time that listing takes to
        answer, about 2 ms with this client, is not counted: a listing sent then would list it). The
        listing is asked again 0.5 ms after each answer: a tighter loop would hold back the very event it
        waits for."""
        rounds = 20 if self.quick else 100
        lags, at_once = [], 0
        for _ in range(rounds):
            job_id = self.lb.post(f"/studies/{study}/archive", json={"Asynchronous": True}).json()["ID"]
            created = time.perf_counter()
            asked = 0
            while True:
                asked += 1
                sent = time.perf_counter()
                if job_id in self.lb.get("/jobs").json():
                    break
                time.sleep(0.0005)
            lags.append((sent - created) * 1000)
            at_once += asked == 1
            time.sleep(0.05)
        self.figures["listed_after_creation_ms"] = {
            "creations": rounds,
            "listed_at_first_listing": at_once,
            "p50": round(percentile(lags, 0.5), 2),
            "p99": round(percentile(lags, 0.99), 2),
        }

    def listing(self, study: str, sizes: list[int]) -> None:
        """GET /jobs?expand for the whole cluster against one Orthanc answering for the same jobs."""
        created: list[str] = []
        results = []
        for size in sizes:
            started = time.monotonic()
            created += self.create_jobs("orthanc-1", study, size - len(created))
            self.wait_all_finished("orthanc-1", size)
            self.say(f"  {size} jobs created and finished on orthanc-1 in {time.monotonic() - started:.0f} s")
            deadline = time.monotonic() + 60
            while len(listed := set(self.lb.get("/jobs").json())) < size and time.monotonic() < deadline:
                time.sleep(0.5)
            missing = len(set(created) - listed)
            rounds = 30 if size <= 1000 else 10
            service = p50_ms(self.lb, "/jobs?expand", rounds)
            reference = p50_ms(self.direct["orthanc-1"], "/jobs?expand", rounds)
            results.append(
                {
                    "jobs": size,
                    "listed": len(set(created) & listed),
                    "missing": missing,
                    "job_service_p50_ms": round(service, 2),
                    "orthanc_p50_ms": round(reference, 2),
                    "ratio": round(service / reference, 3),
                }
            )
        self.figures["expand_listing"] = results
        if len(results) > 1:
            self.figures["expand_listing_growth"] = {
                "jobs_factor": results[-1]["jobs"] / results[0]["jobs"],
                "time_factor": round(results[-1]["job_service_p50_ms"] / results[0]["job_service_p50_ms"], 2),
            }

    def running_jobs(self, study: str) -> tuple[list[str], Callable[[], None]]:
        """Two C-STOREs to a modality that never answers: Running until released."""
        import socket

        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        connections: list[socket.socket] = []

        def accept() -> None:
            while True:
                try:
                    connections.append(server.accept()[0])
                except OSError:
                    return

        threading.Thread(target=accept, daemon=True).start()
        client = self.direct["orthanc-2"]
        modality = {"AET": "SILENT", "Host": "127.0.0.1", "Port": server.getsockname()[1]}
        client.put("/modalities/silent", json=modality).raise_for_status()
        ids = []
        for _ in range(2):
            answer = client.post(
                "/modalities/silent/store", json={"Resources": [study], "Asynchronous": True}
            )
            ids.append(answer.json()["ID"])
        deadline = time.monotonic() + 30
        while any(self.lb.get(f"/jobs/{i}").json()["State"] != "Running" for i in ids):
            if time.monotonic() > deadline:
                states = [self.lb.get(f"/jobs/{i}").text[:300] for i in ids]
                raise RuntimeError(f"the C-STOREs did not start: {states}")
            time.sleep(0.1)

        def release() -> None:
            server.close()
            for connection in connections:
                connection.close()

        return ids, release

    def single_job(self, running: str, completed: str) -> None:
        """``GET /jobs/{id}`` by three paths, with wrk at 1 and 50 connections, in interleaved rounds:
        Orthanc directly, nginx to the owning Orthanc (its per-server path, a keep-alive upstream as the
        job-service's), and nginx to the job-service (the path clients use)."""
        rounds, seconds = (1, 1) if self.quick else (5, 3)
        results: dict[str, Any] = {}
        for label, job_id, owner in (
            ("running", running, "orthanc-2"),
            ("completed", completed, "orthanc-1"),
        ):
            urls = {
                "orthanc": f"{self.state.orthanc_urls[owner]}/jobs/{job_id}",
                "nginx_owner": f"{self.state.lb_url}/{owner}/jobs/{job_id}",
                "nginx_service": f"{self.state.orthanc_lb_url}/jobs/{job_id}",
            }
            for connections in (1, 50):
                results[f"{label}_{connections}"] = against_owner(urls, connections, rounds, seconds)
        self.figures["get_job"] = results

    def filtered(self) -> None:
        rounds = 200
        times = p50_ms(self.lb, "/jobs?status=Running", rounds, warm=10)
        total = len(self.lb.get("/jobs").json())
        running = self.lb.get("/jobs?status=Running").json()
        self.figures["filtered_listing"] = {
            "jobs": total,
            "running": len(running),
            "job_service_p50_ms": round(times, 3),
        }

    def freshness(self, study: str) -> None:
        """From Orthanc answering a job's final state to the job-service answering it."""
        client = self.direct["orthanc-3"]
        lags = []
        for _ in range(30 if self.quick else 100):
            job_id = client.post(f"/studies/{study}/archive", json={"Asynchronous": True}).json()["ID"]
            while client.get(f"/jobs/{job_id}").json()["State"] not in TERMINAL:
                pass
            at_orthanc = time.perf_counter()
            while self.lb.get(f"/jobs/{job_id}").json()["State"] not in TERMINAL:
                pass
            lags.append((time.perf_counter() - at_orthanc) * 1000)
        self.figures["freshness_terminal_ms"] = {
            "samples": len(lags),
            "p50": round(statistics.median(lags), 2),
            "p99": round(percentile(lags, 0.99), 2),
        }

    def ingestion(self) -> None:
        """Plugin events per second the job-service takes, with job JSON as Orthanc writes it."""
        url = f"{self.state.service_url}/orthanc-jobs/internal"
        secret = plugin_secret_for(self.state.secret, INGESTION_SERVER)
        headers = {"Authorization": f"Bearer {secret}", "X-Orthanc-Jobs-Server": INGESTION_SERVER}
        incarnation = f"bench-{uuid.uuid4()}"
        registration = {"Name": "bench", "Url": INGESTION_SERVER, "Incarnation": incarnation, "Token": "x"}
        httpx.post(f"{url}/register", json=registration, headers=headers).raise_for_status()
        template = self.lb.get("/jobs?expand&limit=1").json()[0]
        template.pop("Server")
        seconds = 3 if self.quick else 10
        # The full run also fills the history for the start figure (restart_with_history).
        minimum = 0 if self.quick else HISTORY_AT_START
        counted = [0]
        deadline = time.monotonic() + seconds

        def sender() -> None:
            with httpx.Client(timeout=30) as client:
                while time.monotonic() < deadline or counted[0] < minimum:
                    events = []
                    for _ in range(500):
                        job_id = str(uuid.uuid4())
                        events.append(
                            {"Type": "JOB_SUCCESS", "JobId": job_id, "Job": dict(template, ID=job_id)}
                        )
                    batch = {"Incarnation": incarnation, "Events": events}
                    body = json.dumps(batch).encode()
                    client.post(f"{url}/events", content=body, headers=headers).raise_for_status()
                    counted[0] += len(events)

        started = time.monotonic()
        with ThreadPoolExecutor(3) as pool:
            for future in [pool.submit(sender) for _ in range(3)]:
                future.result()
        elapsed = time.monotonic() - started
        self.figures["event_ingestion"] = {"events": counted[0], "per_second": round(counted[0] / elapsed)}
        # Those jobs of a made-up server would weigh on what follows: stop it (they end as history).
        stop = {"Incarnation": incarnation, "Events": [{"Type": "ORTHANC_STOPPED"}]}
        httpx.post(f"{url}/events", json=stop, headers=headers).raise_for_status()

    def restart_with_history(self) -> None:
        """From the job-service's start to ``/readyz`` 200 (history loaded, an Orthanc reached), with every
        job of the run in its history (at least HISTORY_AT_START in the full run), and its memory then."""
        jobs = len(self.lb.get("/jobs").json())
        directory = Path(self.state.directory)
        stop_process(directory, "job-service")
        started = time.monotonic()
        process = start_process(directory, "job-service")
        while httpx.get(f"{self.state.service_url}/readyz", timeout=5).status_code != 200:
            time.sleep(0.02)
        self.figures["time_to_ready"] = {
            "jobs": jobs,
            "seconds": round(time.monotonic() - started, 2),
            "rss_mb": round(rss_mb(process.pid), 1),
        }

    def idle(self) -> None:
        seconds = 10 if self.quick else 30
        time.sleep(2)
        before = cpu_seconds(self.service_pid)
        time.sleep(seconds)
        used = cpu_seconds(self.service_pid) - before
        history = len(self.lb.get("/jobs").json())
        running = len(self.lb.get("/jobs?status=Pending,Running").json())
        self.figures["idle"] = {
            "seconds": seconds,
            "jobs_in_history": history,
            "unfinished_jobs": running,
            "cpu_percent_of_one_core": round(100 * used / seconds, 2),
        }

    def streaming(self, megabytes: int) -> None:
        """Download of a large async archive through the job-service, against the owner directly."""
        client = self.direct["orthanc-3"]
        per_instance = 10 if megabytes >= 100 else 5
        # Encapsulated PDFs of random bytes: large, incompressible instances made by Orthanc itself.
        payload = b"%PDF-1.4\n" + os.urandom(per_instance * 1024 * 1024)
        content = "data:application/pdf;base64," + b64encode(payload).decode()
        tags = {
            "PatientName": "BENCH^BIG",
            "PatientID": "BIG",
            "StudyInstanceUID": f"2.25.{uuid.uuid4().int}",
        }
        study = ""
        for _ in range(megabytes // per_instance):
            answer = client.post(
                "/tools/create-dicom", json={"Tags": tags, "Content": content, "Force": True}
            )
            answer.raise_for_status()
            study = answer.json()["ParentStudy"]
        job_id = client.post(f"/studies/{study}/archive", json={"Asynchronous": True}).json()["ID"]
        deadline = time.monotonic() + 600
        while self.lb.get(f"/jobs/{job_id}").json()["State"] not in TERMINAL:
            if time.monotonic() > deadline:
                raise RuntimeError("the archive did not finish")
            time.sleep(0.5)

        def download(http: httpx.Client) -> tuple[float, int, float]:
            peak = [rss_mb(self.service_pid)]
            stop = threading.Event()

            def watch() -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], rss_mb(self.service_pid))
                    time.sleep(0.02)

            watcher = threading.Thread(target=watch)
            before = rss_mb(self.service_pid)
            watcher.start()
            started = time.perf_counter()
            size = 0
            # No compression on either side: a ZIP gains nothing from it, and Orthanc would gzip on the fly.
            with http.stream(
                "GET", f"/jobs/{job_id}/archive", headers={"Accept-Encoding": "identity"}
            ) as answer:
                answer.raise_for_status()
                for chunk in answer.iter_raw(1024 * 1024):
                    size += len(chunk)
            elapsed = time.perf_counter() - started
            stop.set()
            watcher.join()
            return size / elapsed / 1e6, size, peak[0] - before

        direct_rate, size, _ = download(client)
        service_rate, service_size, growth = download(self.lb)
        direct_rate_again, _, _ = download(client)
        reference = (direct_rate + direct_rate_again) / 2
        self.figures["archive_download"] = {
            "archive_mb": round(size / 1e6),
            "same_size": size == service_size,
            "orthanc_mb_per_s": round(reference),
            "job_service_mb_per_s": round(service_rate),
            "ratio": round(service_rate / reference, 3),
            "job_service_rss_growth_mb": round(growth, 1),
        }

    def memory_per_job(self) -> None:
        """Memory the registry needs per completed job, its JSON included (measured in this process)."""
        template = self.lb.get("/jobs?expand&limit=1").json()[0]
        template.pop("Server")
        count = 10_000
        registry = Registry(SqliteStore(":memory:"), not_responding_after=10, stopped_after=60)
        server = registry.register_server(name="m", url="http://m", incarnation="m", token="t")
        contents = [
            dict(template, ID=str(uuid.uuid4()), CreationTime=f"20261128T{n:06d}.0") for n in range(count)
        ]
        json_bytes = sum(len(json.dumps(c, separators=(",", ":"))) for c in contents)
        raw = [json.dumps(c) for c in contents]
        del contents
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for text in raw:
            registry.apply_snapshot(server, json.loads(text))
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        per_job = (after - before) / count
        self.figures["memory_per_job"] = {
            "jobs": count,
            "bytes_per_job": round(per_job),
            "json_bytes_per_job": round(json_bytes / count),
        }


def versions(state: ClusterState) -> dict[str, str]:
    with httpx.Client(auth=DEMO_USER) as client:
        orthanc = client.get(f"{state.orthanc_lb_url}/system").json().get("Version", "")
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False).stderr.strip()
    return {
        "orthanc": orthanc,
        "nginx": nginx.removeprefix("nginx version: "),
        "python": platform.python_version(),
        "orthanc_jobs": __version__,
    }


def table(figures: dict[str, Any]) -> str:
    lines = [f"{'figure':<46}{'job-service':>14}{'reference':>14}{'ratio':>9}  target"]

    def row(name: str, ours: object, reference: object = "", ratio: object = "", target: str = "") -> None:
        lines.append(f"{name:<46}{ours!s:>14}{reference!s:>14}{ratio!s:>9}  {target}")

    for item in figures.get("expand_listing", []):
        row(
            f"GET /jobs?expand, {item['jobs']} jobs (p50 ms)",
            item["job_service_p50_ms"],
            item["orthanc_p50_ms"],
            item["ratio"],
            f"<= 0.25; listed {item['listed']}/{item['jobs']}",
        )
    if growth := figures.get("expand_listing_growth"):
        row(
            "  time growth for jobs x" + str(int(growth["jobs_factor"])),
            growth["time_factor"],
            "",
            "",
            "linear",
        )
    if filtered := figures.get("filtered_listing"):
        row(
            f"GET /jobs?status=Running of {filtered['jobs']} (p50 ms)",
            filtered["job_service_p50_ms"],
            "",
            "",
            "< 5",
        )
    for key, item in figures.get("get_job", {}).items():
        label, connections = key.rsplit("_", 1)
        service, owner, orthanc = item["nginx_service"], item["nginx_owner"], item["orthanc"]
        name = f"GET /jobs/{{id}}, {label}, {connections} conn."
        row(
            f"{name} p50 ms",
            service["p50_ms"],
            owner["p50_ms"],
            item["p50_ratio"],
            "<= 1" if key == "completed_1" else "",
        )
        row("  p99 ms", service["p99_ms"], owner["p99_ms"], "", "")
        row(
            "  requests/s",
            service["requests_per_s"],
            owner["requests_per_s"],
            item["throughput_ratio"],
            ">= 0.75 (1 replica)" if connections == "50" else "",
        )
        row("  Orthanc directly: p50 ms, requests/s", orthanc["p50_ms"], orthanc["requests_per_s"], "", "")
        row("  wrk's own CPU per request (us)", service["client_cpu_us"], owner["client_cpu_us"], "", "")
    if listed := figures.get("listed_after_creation_ms"):
        row("created to listed, p50 ms", listed["p50"], "", "", "")
        row(
            f"  p99 ms ({listed['listed_at_first_listing']}/{listed['creations']} at the first listing)",
            listed["p99"],
            "",
            "",
            "< 5",
        )
    if fresh := figures.get("freshness_terminal_ms"):
        row("freshness of a final state (p99 ms)", fresh["p99"], "", "", "<= 50")
    if ingestion := figures.get("event_ingestion"):
        row("plugin events ingested per second", ingestion["per_second"], "", "", ">= 2000")
    if idle := figures.get("idle"):
        row(
            f"idle CPU, {idle['jobs_in_history']} jobs in history (%)",
            idle["cpu_percent_of_one_core"],
            "",
            "",
            "< 2",
        )
    if download := figures.get("archive_download"):
        row(
            f"archive download, {download['archive_mb']} MB (MB/s)",
            download["job_service_mb_per_s"],
            download["orthanc_mb_per_s"],
            download["ratio"],
            ">= 0.7",
        )
        row("  job-service memory growth (MB)", download["job_service_rss_growth_mb"], "", "", "< 50")
    if memory := figures.get("memory_per_job"):
        row("memory per completed job, in all (bytes)", memory["bytes_per_job"], "", "", "<= 1500")
        row("  of which its JSON (bytes)", memory["json_bytes_per_job"], "", "", "")
    if ready := figures.get("time_to_ready"):
        row(f"start to /readyz, {ready['jobs']} jobs (s)", ready["seconds"], "", "", "< 3")
        row("  memory (RSS) once ready (MB)", ready["rss_mb"], "", "", "")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: checks that the suite works")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    arguments = parser.parse_args()
    sizes = [100, 300] if arguments.quick else [1000, 10000]
    archive_mb = 20 if arguments.quick else 500
    directory = Path(tempfile.mkdtemp(prefix="orthanc-jobs-bench-"))
    overrides = {"JobsHistorySize": sizes[-1] + 1000, "DicomScuTimeout": 3600, "ConcurrentJobs": 2}
    started = time.monotonic()
    # The made-up server of the ingestion figure must be declared, as every server is.
    settings = {"allowed_server_urls": INGESTION_SERVER}
    state = up(
        directory, lb_port=0, orthanc_overrides=overrides, service_settings=settings, say=lambda *_: None
    )
    try:
        bench = Bench(state, arguments.quick)
        bench.say(f"cluster up in {directory}")
        study, _ = create_study(bench.lb, "BENCH")
        bench.say("listed after creation...")
        bench.listed_after_creation(study)  # first: the listing is short
        bench.say("listing...")
        bench.listing(study, sizes)
        running, release = bench.running_jobs(study)
        completed = bench.lb.get("/jobs?status=Success&server=orthanc-1&limit=1").json()[0]
        bench.say("single jobs, filtered listing...")
        bench.single_job(running[0], completed)
        bench.filtered()
        release()
        bench.say("freshness...")
        bench.freshness(study)
        bench.say("idle...")
        bench.idle()
        bench.say("archive download...")
        bench.streaming(archive_mb)
        bench.say("event ingestion, memory...")
        bench.ingestion()  # late: it leaves many made-up jobs in the history
        bench.say("restart with that history...")
        bench.restart_with_history()
        bench.memory_per_job()
        figures = bench.figures
        result = {
            "quick": arguments.quick,
            "cores": os.cpu_count(),
            "versions": versions(state),
            "seconds": round(time.monotonic() - started),
            "figures": figures,
        }
    finally:
        down(directory, say=lambda *_: None)
        shutil.rmtree(directory, ignore_errors=True)
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(table(figures))
    print(f"\n{result['cores']} cores; {result['versions']}; {result['seconds']} s")
    print(f"figures in {arguments.output}")


if __name__ == "__main__":
    sys.exit(main())

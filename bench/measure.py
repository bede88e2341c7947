"""What the benchmarks share: wrk as the load generator, and percentiles.

wrk is lean: C, one event loop per thread, no parsing beyond HTTP framing. Its own cost is measured in
each run (the CPU time wrk used, per request: ``client_cpu_us``) and reported next to the figures. Several
paths are compared in interleaved rounds (path A, B,
C, then A, B, C again...) and each figure is the median of its rounds: a burst of noise on the machine
touches every path alike.
"""

import base64
import os
import re
import resource
import statistics
import subprocess
from pathlib import Path
from typing import Any

from orthanc_jobs.cluster.launcher import DEMO_USER

AUTHORIZATION = "Basic " + base64.b64encode(":".join(DEMO_USER).encode()).decode()
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def wrk(url: str, connections: int, seconds: float, authorization: str = AUTHORIZATION) -> dict[str, float]:
    """One run of wrk against ``url``: requests/s, p50 and p99 (ms), the requests that failed (an answer
    other than 2xx or 3xx, or a socket error), and wrk's own CPU time per request (microseconds)."""
    command = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    command += ["-H", f"Authorization: {authorization}", url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    def latency(percent: str) -> float:
        found = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        return round(float(found.group(1)) * _UNITS[found.group(2)], 3) if found else 0.0

    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    total = re.search(r"(\d+) requests in", output)
    requests = int(total.group(1)) if total else 0
    return {
        "requests_per_s": round(float(rate.group(1))) if rate else 0,
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "failed": (int(non_2xx.group(1)) if non_2xx else 0)
        + (sum(map(int, errors.groups())) if errors else 0),
        "client_cpu_us": round(client_cpu / requests * 1e6, 1) if requests else 0.0,
    }


def interleaved(urls: dict[str, str], connections: int, rounds: int, seconds: float) -> dict[str, Any]:
    """wrk on each URL in turn, ``rounds`` times: per URL, the median of each figure over the rounds."""
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in urls}
    for _ in range(rounds):
        for label, url in urls.items():
            runs[label].append(wrk(url, connections, seconds))
    return {
        label: {
            "requests_per_s": round(statistics.median(r["requests_per_s"] for r in measured)),
            "p50_ms": round(statistics.median(r["p50_ms"] for r in measured), 3),
            "p99_ms": round(statistics.median(r["p99_ms"] for r in measured), 3),
            "failed": sum(int(r["failed"]) for r in measured),
            "client_cpu_us": round(statistics.median(r["client_cpu_us"] for r in measured), 1),
        }
        for label, measured in runs.items()
    }


def against_owner(urls: dict[str, str], connections: int, rounds: int, seconds: float) -> dict[str, Any]:
    """``interleaved``, with the job-service's path (``nginx_service``) as a ratio of the reference
    (``nginx_owner``): its p50, and its requests per second."""
    measured = interleaved(urls, connections, rounds, seconds)
    service, reference = measured["nginx_service"], measured["nginx_owner"]
    measured["p50_ratio"] = round(service["p50_ms"] / reference["p50_ms"], 3)
    measured["throughput_ratio"] = round(service["requests_per_s"] / reference["requests_per_s"], 3)
    return measured


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0

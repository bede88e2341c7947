"""What one client's load may cost the others (issue #9, points 5-7), on a real cluster of its own.

- a flood of unknown job ids (wrk, 100 connections) shares each server's lookup rounds and leaves the
  service's other answers as fast as they were;
- thousands of half-sent requests are closed, and never take the file handles the plugins need;
- out of file handles, the service recovers by itself once handles are back, and /readyz says whether
  it can answer.

Loads are bounded (seconds, loopback only); latency bounds are ratios to figures measured in the same
run, never absolute times.
"""

import asyncio
import http.client
import os
import re
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from orthanc_jobs.cluster.launcher import DEMO_USER, ClusterState
from tests.e2e.conftest import ORTHANC_CONFIG, running_cluster
from tests.e2e.helpers import create_async_job, create_study, pid_of, plugin_headers, wait_for, wait_job_state

pytestmark = pytest.mark.e2e

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
NOT_RESPONDING_AFTER = 4.0
AUTHORIZATION = "Basic ZGVtbzpkZW1v"  # demo:demo

# wrk's requests: random, well-formed job ids that no server holds.
RANDOM_IDS = """
math.randomseed(os.time())
local hex = "0123456789abcdef"
local function r(n)
  local t = {}
  for i = 1, n do local k = math.random(1, 16); t[i] = hex:sub(k, k) end
  return table.concat(t)
end
wrk.headers["Authorization"] = "AUTHORIZATION"
request = function()
  local id = r(8) .. "-" .. r(4) .. "-" .. r(4) .. "-" .. r(4) .. "-" .. r(12)
  return wrk.format("GET", "/orthanc/jobs/" .. id)
end
""".replace("AUTHORIZATION", AUTHORIZATION)


@pytest.fixture(scope="module")
def cluster(orthanc_version: str) -> Iterator[ClusterState]:
    settings = {
        "header_timeout": str(HEADER_TIMEOUT),
        "body_timeout": str(BODY_TIMEOUT),
        "not_responding_after": str(NOT_RESPONDING_AFTER),
    }
    with running_cluster("flood", orthanc_version, ORTHANC_CONFIG, settings) as state:
        yield state


@pytest.fixture(scope="module")
def lb(cluster: ClusterState) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cluster.orthanc_lb_url, auth=DEMO_USER, timeout=30) as client:
        yield client


def _latencies(url: str, path: str, headers: dict[str, str], count: int) -> list[float]:
    """Sequential requests over one kept-alive connection (as a polling client), each answered 200."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    timings = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            connection.request("GET", parts.path + path, headers=headers)
            answer = connection.getresponse()
            answer.read()
            timings.append(time.perf_counter() - started)
            assert answer.status == 200, (path, answer.status)
            time.sleep(0.005)
    finally:
        connection.close()
    return sorted(timings)


def _p99(timings: list[float]) -> float:
    return timings[int(len(timings) * 0.99)]


def _metric(cluster: ClusterState, name: str) -> float:
    text = httpx.get(f"{cluster.service_url}/metrics").text
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


def test_a_flood_of_unknown_ids_shares_rounds_and_slows_no_one_else(
    cluster: ClusterState, lb: httpx.Client, tmp_path: Path
) -> None:
    wrk = shutil.which("wrk")
    assert wrk, "wrk is missing: run ./scripts/install-system-deps.sh"
    study, _ = create_study(lb, "FLOOD")
    known = create_async_job(lb, "archive", study)
    wait_job_state(lb, known, {"Success"})
    probes = {
        "healthz": (cluster.service_url, "/healthz", {}),
        "known job": (cluster.orthanc_lb_url, f"/jobs/{known}", {"Authorization": AUTHORIZATION}),
    }
    unloaded = {name: _latencies(*probe, 300) for name, probe in probes.items()}

    script = tmp_path / "random-ids.lua"
    script.write_text(RANDOM_IDS)
    rounds_before = _metric(cluster, "orthanc_jobs_lookup_rounds_total")
    unknown_before = _metric(cluster, "orthanc_jobs_unknown_job_lookups_total")
    seconds = 8
    flood = subprocess.Popen(
        [wrk, "-t2", "-c100", f"-d{seconds}s", "-s", str(script), cluster.lb_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(1)
        loaded = {name: _latencies(*probe, 300) for name, probe in probes.items()}
        # A job created now is found at its first read, flood or not (by its plugin's event or by the
        # next lookup round, whichever comes first: the rounds' own case is in
        # tests/unit/core/test_lookups.py).
        fresh = create_async_job(lb, "archive", study)
        assert lb.get(f"/jobs/{fresh}").status_code == 200
    finally:
        output, _ = flood.communicate(timeout=seconds + 30)
    rounds = _metric(cluster, "orthanc_jobs_lookup_rounds_total") - rounds_before
    unknown = _metric(cluster, "orthanc_jobs_unknown_job_lookups_total") - unknown_before

    total = int(re.search(r"(\d+) requests in", output).group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    not_found = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    report = f"{output}\nlookup rounds {rounds:.0f} for {unknown:.0f} unknown ids"
    assert not_found is not None and int(not_found.group(1)) == total, report  # every one a 404
    assert "Socket errors" not in output, report
    assert unknown >= total * 0.9, report
    # One round per server answers for every id waiting: rounds are counted in tens per second per
    # server, not one per id (before: every id was a request to every server, 21-30 ids/s in all).
    assert rounds <= 3 * (seconds + 2) / 0.05 + 30, report
    assert rounds * 10 < unknown, report
    assert rate >= 300, report  # a floor against regressions; the benchmark measures it (>= 1,000/s)
    print(f"\nflood: {rate:.0f} unknown ids/s, {report.splitlines()[-1]}")
    for name in probes:
        before, during = _p99(unloaded[name]), _p99(loaded[name])
        print(f"{name}: p99 {before * 1e3:.2f} ms unloaded, {during * 1e3:.2f} ms during the flood")
    for name in probes:
        before, during = _p99(unloaded[name]), _p99(loaded[name])
        # Within 10x of the unloaded p99 (taken as at least 2 ms, so that a very quiet machine's
        # sub-millisecond figure does not make the bound tighter than a scheduler's tick).
        assert during <= 10 * max(before, 0.002), (
            f"{name}: p99 {before * 1e3:.2f} ms -> {during * 1e3:.2f} ms"
        )


def _open_files_limit(pid: int) -> int:
    """The process's hard open files limit (the service raises its soft limit to it at start). Tests lower
    the soft limit only: without CAP_SYS_RESOURCE, a hard limit cannot be raised back."""
    limits = Path(f"/proc/{pid}/limits").read_text().splitlines()
    line = next(line for line in limits if line.startswith("Max open files"))
    return int(line.split()[4])


async def _half_sent(
    host: str, port: int, count: int
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    connections = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        connections.append((reader, writer))
    return connections


def test_half_sent_requests_are_closed_and_leave_room_for_the_plugins(cluster: ClusterState) -> None:
    """The open files limit lowered on the running service (as a container's 1,024 would be): before, the
    half-sent connections took every handle and the service answered nothing, not even /healthz."""
    client_limit = resource.getrlimit(resource.RLIMIT_NOFILE)
    if client_limit[0] < client_limit[1]:
        resource.setrlimit(resource.RLIMIT_NOFILE, (client_limit[1], client_limit[1]))
    attackers = min(3000, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 300)
    service_files = attackers // 2 + 100
    service = pid_of(cluster, "job-service")
    limit = _open_files_limit(service)
    subprocess.run(["prlimit", f"--pid={service}", f"--nofile={service_files}:{limit}"], check=True)
    host, port = urlsplit(cluster.service_url).hostname, urlsplit(cluster.service_url).port
    heartbeat = {"Incarnation": "unknown", "Events": []}

    async def attack() -> None:
        connections = await _half_sent(host, port, attackers)
        try:
            held_since = time.monotonic()
            # While they are held: the service answers, nginx reaches it, and so do the plugins.
            while time.monotonic() - held_since < NOT_RESPONDING_AFTER + 1:
                async with httpx.AsyncClient(timeout=5) as client:
                    assert (await client.get(f"{cluster.service_url}/healthz")).status_code == 200
                    answer = await client.get(f"{cluster.orthanc_lb_url}/jobs", auth=DEMO_USER)
                    assert answer.status_code == 200, answer.text
                    answer = await client.post(
                        f"{cluster.service_url}/orthanc-jobs/internal/heartbeat",
                        json=heartbeat,
                        headers=plugin_headers(cluster, "orthanc-1"),
                    )
                    assert answer.status_code in (200, 404), answer.text  # heard (404: unknown incarnation)
                await asyncio.sleep(0.5)
            open_files = len(os.listdir(f"/proc/{service}/fd"))
            assert open_files < service_files, open_files
            # Every half-sent request is closed within the header timeout (a little later for the
            # younger ones, which were not closed to make room).
            await asyncio.sleep(HEADER_TIMEOUT + 1)
            still_open = 0
            for reader, _ in connections:
                try:
                    closed = await asyncio.wait_for(reader.read(1), 0.05) == b""
                except (TimeoutError, ConnectionError):
                    closed = reader.at_eof()
                still_open += not closed
            assert still_open == 0, f"{still_open} of {attackers} half-sent requests still open"
        finally:
            for _, writer in connections:
                writer.close()

    try:
        asyncio.run(attack())
        servers = httpx.get(f"{cluster.lb_url}/orthanc-jobs/servers", auth=DEMO_USER).json()
        assert {s["Name"]: s["Status"] for s in servers} == dict.fromkeys(cluster.orthanc_urls, "alive")
    finally:
        subprocess.run(["prlimit", f"--pid={service}", f"--nofile={limit}:{limit}"], check=True)


def test_a_body_that_does_not_arrive_in_time_is_a_408(cluster: ClusterState) -> None:
    parts = urlsplit(cluster.service_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = {**plugin_headers(cluster, "orthanc-1"), "Content-Type": "application/json"}
    connection.putrequest("POST", "/orthanc-jobs/internal/heartbeat")
    for name, value in {**headers, "Content-Length": "1000"}.items():
        connection.putheader(name, value)
    connection.endheaders(b'{"Incarnation": ')
    started = time.monotonic()
    answer = connection.getresponse()
    assert answer.status == 408, answer.read()
    assert BODY_TIMEOUT - 0.5 <= time.monotonic() - started < BODY_TIMEOUT + 5
    connection.close()


def test_out_of_file_handles_the_service_recovers_by_itself(cluster: ClusterState) -> None:
    """Seen once by the review: after the file handles ran out, the connection pool to Orthanc kept its
    slots taken for good, and every request needing a credentials check waited 30 s and got 503 until a
    restart. (The cause, a failing import of sniffio on every request inside httpcore, is now out of the
    way, and a pool an unexpected error breaks out of is replaced: tests/unit/core/test_orthanc.py.)"""
    service = pid_of(cluster, "job-service")
    limit = _open_files_limit(service)
    wrong = httpx.BasicAuth("demo", "not-the-password")  # never cached: each one is asked of the servers
    failures = 0

    async def checks_at_once(count: int) -> None:
        nonlocal failures
        async with httpx.AsyncClient(base_url=cluster.service_url, timeout=30) as client:
            # Each a password never seen: each asked of every server, on more connections than are kept.
            answers = await asyncio.gather(
                *(client.get("/jobs", auth=httpx.BasicAuth("demo", f"wrong-{n}")) for n in range(count)),
                return_exceptions=True,
            )
        # 503: the service could not reach an Orthanc for want of file handles (a refused connection to
        # the service itself, the guard at work, does not count).
        failures += sum(1 for a in answers if not isinstance(a, Exception) and a.status_code == 503)

    try:
        in_use = len(os.listdir(f"/proc/{service}/fd"))
        soft = in_use + 100
        subprocess.run(["prlimit", f"--pid={service}", f"--nofile={soft}:{limit}"], check=True)
        asyncio.run(checks_at_once(150))
    finally:
        subprocess.run(["prlimit", f"--pid={service}", f"--nofile={limit}:{limit}"], check=True)
    assert failures, "the service never ran out of file handles: the test proves nothing"
    with httpx.Client(base_url=cluster.orthanc_lb_url, timeout=10) as client:
        started = time.monotonic()
        answer = wait_for(lambda: client.get("/jobs", auth=DEMO_USER).status_code == 200, timeout=10)
        assert answer and time.monotonic() - started < 10
        assert client.get("/jobs", auth=wrong).status_code == 401
    assert httpx.get(f"{cluster.service_url}/readyz").status_code == 200


def test_readyz_says_whether_an_orthanc_answers_the_service(cluster: ClusterState) -> None:
    assert httpx.get(f"{cluster.service_url}/readyz").json()["Status"] == "ready"
    frozen = [pid_of(cluster, name) for name in cluster.orthanc_urls]
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        answer = httpx.get(f"{cluster.service_url}/readyz", timeout=10)
        assert answer.status_code == 503
        assert answer.json()["Status"] == "no Orthanc server answers the service"
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    wait_for(lambda: httpx.get(f"{cluster.service_url}/readyz").status_code == 200, timeout=10)

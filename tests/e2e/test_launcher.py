"""`orthanc-jobs cluster up|status|down`: everything it starts, it stops, and nothing is left behind."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from orthanc_jobs.cluster.launcher import DEMO_USER, STATE_FILE, ClusterState
from tests.e2e.conftest import DEFAULT_ROOT, start_cluster, stop_cluster
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.e2e


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "orthanc_jobs", "cluster", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def _session_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_up_status_down_leaves_no_process() -> None:
    directory = Path(tempfile.mkdtemp(prefix="orthanc-jobs-e2e-launcher-"))
    state = start_cluster(directory, 2, {"ConcurrentJobs": "1"})
    try:
        configuration = json.loads((directory / "orthanc-1" / "orthanc.json").read_text())
        assert configuration["ConcurrentJobs"] == 1  # --orthanc-config reached every Orthanc
        assert configuration["SaveJobs"] is False
        servers = httpx.get(f"{state.lb_url}/orthanc-jobs/servers", auth=DEMO_USER).json()
        assert sorted((s["Name"], s["Status"]) for s in servers) == [
            ("orthanc-1", "alive"),
            ("orthanc-2", "alive"),
        ]

        status = _cli("status", "--dir", str(directory))
        assert status.returncode == 0, status.stdout + status.stderr
        assert state.lb_url in status.stdout
        again = _cli("up", "--detach", "--dir", str(directory), "--lb-port", "0")
        assert again.returncode == 1
        assert "already runs" in again.stderr

        pids = [p.pid for p in state.processes]
        assert len(pids) == 5  # PostgreSQL, job-service, 2 Orthanc, nginx
        stop_cluster(directory)
        assert [pid for pid in pids if _session_alive(pid)] == []
        assert _cli("status", "--dir", str(directory)).returncode == 1
    finally:
        if any(_session_alive(p.pid) for p in state.processes):
            stop_cluster(directory)
        shutil.rmtree(directory, ignore_errors=True)


def test_status_without_a_cluster_says_so(tmp_path: Path) -> None:
    answer = _cli("status", "--dir", str(tmp_path))
    assert answer.returncode == 3
    assert "no cluster" in answer.stderr


def test_a_stopped_replica_is_passed_over_and_started_again() -> None:
    """Two replicas of the job-service on the cluster's PostgreSQL: with job-service-2 stopped, nginx still
    answers the jobs routes; ``start job-service-2`` waits for that replica's own /healthz."""
    directory = Path(tempfile.mkdtemp(prefix="orthanc-jobs-e2e-launcher-replicas-"))
    folder = ["--dir", str(directory)]
    command = ["up", "--detach", *folder, "--lb-port", "0", "--instances", "2", "--service-replicas", "2"]
    if DEFAULT_ROOT is not None:
        command += ["--orthanc-root", str(DEFAULT_ROOT)]
    started = _cli(*command, timeout=180)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        state = ClusterState.load(directory)
        assert list(state.service_urls) == ["job-service-1", "job-service-2"]
        assert state.service_url == state.service_urls["job-service-1"]
        assert all(url in started.stdout for url in state.service_urls.values())
        configuration = json.loads((directory / "orthanc-1" / "orthanc.json").read_text())
        assert configuration["OrthancJobs"]["Url"] == list(state.service_urls.values())
        second = state.find_process("job-service-2")
        assert second.env["ORTHANC_JOBS_REPLICA_NAME"] == "job-service-2"
        assert second.env["ORTHANC_JOBS_DATABASE"].startswith("postgresql://")

        assert _cli("stop", "job-service-2", *folder).returncode == 0
        with httpx.Client(base_url=state.orthanc_lb_url, auth=DEMO_USER, timeout=10) as lb:
            # Round robin: about half of these go to the stopped replica first, and on to the other.
            assert [lb.get("/jobs").status_code for _ in range(10)] == [200] * 10
        stopped = _cli("status", *folder)
        assert stopped.returncode == 1
        assert re.search(r"^job-service-2 .*NOT RUNNING$", stopped.stdout, re.MULTILINE), stopped.stdout

        again = _cli("start", "job-service-2", *folder)
        assert again.returncode == 0, again.stdout + again.stderr
        assert httpx.get(f"{state.service_urls['job-service-2']}/healthz", timeout=2).status_code == 200
        replicas = _replica_status_lines(folder)
        assert [line.split()[0] for line in replicas] == ["job-service-1", "job-service-2"]
        assert all(re.search(r" running( |$)", line) for line in replicas), replicas
        # Once the replicas say who leads (Leader on /healthz), one does, within a lease's takeover if
        # job-service-2 led when it stopped.
        if any(line.endswith(("leader", "follower")) for line in replicas):
            replicas = wait_for(lambda: _one_leader(folder), timeout=30, what="one replica leading")
            assert sum(line.endswith("  leader") for line in replicas) == 1, replicas
    finally:
        if (directory / STATE_FILE).exists():
            stop_cluster(directory)
        shutil.rmtree(directory, ignore_errors=True)


def _replica_status_lines(folder: list[str]) -> list[str]:
    status = _cli("status", *folder)
    assert status.returncode == 0, status.stdout + status.stderr
    return [line for line in status.stdout.splitlines() if line.startswith("job-service-")]


def _one_leader(folder: list[str]) -> list[str] | None:
    lines = _replica_status_lines(folder)
    return lines if sum(line.endswith("  leader") for line in lines) == 1 else None

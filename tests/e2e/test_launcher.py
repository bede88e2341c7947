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
from tests.e2e.conftest import orthanc_root, start_cluster, stop_cluster
from tests.e2e.helpers import create_async_job, create_study, wait_for, wait_job_state

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
        # Each server's Orthanc version, as it says itself.
        assert len(re.findall(r"^orthanc-\d .* running  Orthanc \d+\.\d+\.\d+$", status.stdout, re.M)) == 2
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


def test_a_cluster_of_mixed_versions_and_one_server_upgraded_in_place() -> None:
    """``--server-orthanc-root``: orthanc-2 runs Orthanc 1.12 beside a 1.10 server, on the same database;
    ``restart orthanc-1 --orthanc-root``: it runs the other version on the same configuration and data."""
    newer = orthanc_root("1.12")
    assert isinstance(newer, Path)
    directory = Path(tempfile.mkdtemp(prefix="orthanc-jobs-e2e-launcher-mixed-"))
    folder = ["--dir", str(directory)]
    command = ["up", "--detach", *folder, "--lb-port", "0", "--instances", "2"]
    started = _cli(*command, "--server-orthanc-root", f"orthanc-2={newer}", timeout=180)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        state = ClusterState.load(directory)

        def versions() -> dict[str, str]:
            servers = httpx.get(f"{state.lb_url}/orthanc-jobs/servers", auth=DEMO_USER, timeout=10).json()
            return {
                server["Name"]: server["OrthancVersion"] for server in servers if server["Status"] == "alive"
            }

        # Each server's version as its plugin reports it (with its registration, or its next heartbeat).
        wait_for(lambda: versions() == {"orthanc-1": "1.10.1", "orthanc-2": "1.12.7"}, timeout=30)
        status = _cli("status", *folder).stdout
        assert re.search(r"^orthanc-1 .*  Orthanc 1\.10\.1$", status, re.M), status
        assert re.search(r"^orthanc-2 .*  Orthanc 1\.12\.7$", status, re.M), status
        with httpx.Client(base_url=state.orthanc_lb_url, auth=DEMO_USER, timeout=30) as lb:
            study, _ = create_study(lb, "MIXED")
            jobs = [create_async_job(lb, "archive", study) for _ in range(4)]  # on both, round robin
            assert {wait_job_state(lb, job_id, {"Success"})["State"] for job_id in jobs} == {"Success"}

            upgraded = _cli("restart", "orthanc-1", *folder, "--orthanc-root", str(newer))
            assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
            wait_for(lambda: versions() == {"orthanc-1": "1.12.7", "orthanc-2": "1.12.7"}, timeout=30)
            after = create_async_job(lb, "archive", study)
            assert wait_job_state(lb, after, {"Success"})["State"] == "Success"
            assert all(lb.get(f"/jobs/{job_id}").status_code == 200 for job_id in jobs)  # the history kept

        refused = _cli("restart", "nginx", *folder, "--orthanc-root", "system")
        assert refused.returncode != 0 and "not an Orthanc server" in refused.stderr
    finally:
        if (directory / STATE_FILE).exists():
            stop_cluster(directory)
        shutil.rmtree(directory, ignore_errors=True)

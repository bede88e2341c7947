"""`orthanc-jobs cluster up|status|down`: everything it starts, it stops, and nothing is left behind."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from orthanc_jobs.cluster.launcher import DEMO_USER
from tests.e2e.conftest import start_cluster, stop_cluster

pytestmark = pytest.mark.e2e


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "orthanc_jobs", "cluster", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


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

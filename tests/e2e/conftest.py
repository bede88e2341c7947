"""The real local cluster (PostgreSQL, 3 Orthanc, nginx, job-service), started by the project's launcher."""

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from orthanc_jobs.cluster.launcher import DEMO_USER, ClusterState

# ConcurrentJobs 1 makes pending jobs easy to hold; a long DicomScuTimeout keeps a C-STORE to a silent
# modality running until the test closes it; the history is large enough to hold every job of the run.
ORTHANC_CONFIG = {
    "ConcurrentJobs": "1",
    "DicomScuTimeout": "3600",
    "JobsHistorySize": "1000",
    "MediaArchiveSize": "10",
}


def start_cluster(
    directory: Path,
    instances: int,
    orthanc_config: dict[str, str],
    service_settings: dict[str, str] | None = None,
) -> ClusterState:
    command = [sys.executable, "-m", "orthanc_jobs", "cluster", "up", "--detach", "--dir", str(directory)]
    command += ["--lb-port", "0", "--instances", str(instances)]
    for key, value in orthanc_config.items():
        command += ["--orthanc-config", f"{key}={value}"]
    for key, value in (service_settings or {}).items():
        command += ["--service-setting", f"{key}={value}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, f"cluster up failed:\n{result.stdout}\n{result.stderr}"
    return ClusterState.load(directory)


def stop_cluster(directory: Path) -> None:
    command = [sys.executable, "-m", "orthanc_jobs", "cluster", "down", "--dir", str(directory)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"cluster down failed:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="session")
def cluster_dir() -> Iterator[Path]:
    # Not under pytest's private tmp folder: PostgreSQL runs as another user and must reach it.
    directory = Path(tempfile.mkdtemp(prefix="orthanc-jobs-e2e-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster(cluster_dir: Path) -> Iterator[ClusterState]:
    state = start_cluster(cluster_dir, 3, ORTHANC_CONFIG)
    try:
        yield state
    finally:
        stop_cluster(cluster_dir)


@pytest.fixture(scope="session")
def lb(cluster: ClusterState) -> Iterator[httpx.Client]:
    """Orthanc's REST API through the load balancer, with the cluster's credentials."""
    with httpx.Client(base_url=cluster.orthanc_lb_url, auth=DEMO_USER, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def servers(cluster: ClusterState) -> Iterator[dict[str, httpx.Client]]:
    """Each Orthanc server on its own (through its per-server path of the same nginx)."""
    clients = {
        name: httpx.Client(base_url=f"{cluster.lb_url}/{name}", auth=DEMO_USER, timeout=30)
        for name in cluster.orthanc_urls
    }
    yield clients
    for client in clients.values():
        client.close()

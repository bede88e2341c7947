"""The real local cluster (PostgreSQL, 3 Orthanc, nginx, job-service), started by the project's launcher."""

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from orthanc_jobs.cluster.launcher import DEMO_USER, ClusterState

# These run their DICOM servers (which listen on every interface) in a network namespace of their own:
# tests/e2e/test_own_network.py starts them there, with ORTHANC_JOBS_TEST_OWN_NETWORK set.
collect_ignore = (
    []
    if os.environ.get("ORTHANC_JOBS_TEST_OWN_NETWORK")
    else ["test_query_retrieve.py", "test_night_of_failures.py"]
)

# ConcurrentJobs 1 makes pending jobs easy to hold; a long DicomScuTimeout keeps a C-STORE to a silent
# modality running until the test closes it; the history is large enough to hold every job of the run.
ORTHANC_CONFIG = {
    "ConcurrentJobs": "1",
    "DicomScuTimeout": "3600",
    "JobsHistorySize": "1000",
    "MediaArchiveSize": "10",
}


# The Orthanc versions the project supports, each with the Debian root it runs from (None: the system's,
# 1.10.1 on Debian 12). `make test` installs the 1.12 root (scripts/install-orthanc-root.sh).
ORTHANC_112_ROOT = Path(
    os.environ.get("ORTHANC_JOBS_TEST_ORTHANC_112_ROOT")
    or Path(__file__).resolve().parents[2] / ".cache" / "orthanc-1.12"
)
ORTHANC_VERSIONS: dict[str, Path | None] = {"1.10": None, "1.12": ORTHANC_112_ROOT}


def _tested_versions() -> list[str]:
    """Every supported version, or those ORTHANC_JOBS_TEST_ORTHANC_VERSIONS names (e.g. ``1.12``)."""
    chosen = os.environ.get("ORTHANC_JOBS_TEST_ORTHANC_VERSIONS", "").replace(",", " ").split()
    unknown = sorted(set(chosen) - set(ORTHANC_VERSIONS))
    if unknown:
        known = ", ".join(ORTHANC_VERSIONS)
        raise pytest.UsageError(f"ORTHANC_JOBS_TEST_ORTHANC_VERSIONS: {', '.join(unknown)} unknown ({known})")
    return chosen or list(ORTHANC_VERSIONS)


TESTED_VERSIONS = _tested_versions()


def orthanc_root(version: str) -> Path | None:
    """The root to run Orthanc ``version`` from (None: the system's); one not installed fails the test."""
    root = ORTHANC_VERSIONS[version]
    if root is not None and not (root / "usr" / "sbin" / "Orthanc").exists():
        pytest.fail(f"Orthanc {version} is not installed in {root}: run `make orthanc-1.12` (or `make test`)")
    return root


@pytest.fixture(scope="session", params=TESTED_VERSIONS)
def orthanc_version(request: pytest.FixtureRequest) -> str:
    """The Orthanc version a test's cluster runs: every test that uses a cluster runs once on each. pytest
    runs all the tests of one version before those of the next, so one session cluster runs at a time."""
    return str(request.param)


def start_cluster(
    directory: Path,
    instances: int,
    orthanc_config: dict[str, str],
    service_settings: dict[str, str] | None = None,
    orthanc_root: Path | None = None,
    service_database: str = "sqlite",
    service_replicas: int = 1,
) -> ClusterState:
    """``orthanc_root``: a Debian root to run Orthanc from (None: the system's Orthanc)."""
    command = [sys.executable, "-m", "orthanc_jobs", "cluster", "up", "--detach", "--dir", str(directory)]
    command += ["--lb-port", "0", "--instances", str(instances)]
    if orthanc_root is not None:
        command += ["--orthanc-root", str(orthanc_root)]
    for key, value in orthanc_config.items():
        command += ["--orthanc-config", f"{key}={value}"]
    for key, value in (service_settings or {}).items():
        command += ["--service-setting", f"{key}={value}"]
    command += ["--service-database", service_database, "--service-replicas", str(service_replicas)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, f"cluster up failed:\n{result.stdout}\n{result.stderr}"
    return ClusterState.load(directory)


def stop_cluster(directory: Path) -> None:
    command = [sys.executable, "-m", "orthanc_jobs", "cluster", "down", "--dir", str(directory)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"cluster down failed:\n{result.stdout}\n{result.stderr}"


@contextmanager
def running_cluster(
    label: str,
    version: str,
    orthanc_config: dict[str, str],
    service_settings: dict[str, str] | None = None,
    instances: int = 3,
    service_database: str = "sqlite",
    service_replicas: int = 1,
) -> Iterator[ClusterState]:
    """A cluster of Orthanc ``version``, in a folder of its own, stopped and removed at the end."""
    # Not under pytest's private tmp folder: PostgreSQL runs as another user and must reach it.
    directory = Path(tempfile.mkdtemp(prefix=f"orthanc-jobs-e2e-{label}-{version}-"))
    state = start_cluster(
        directory,
        instances,
        orthanc_config,
        service_settings,
        orthanc_root(version),
        service_database,
        service_replicas,
    )
    try:
        yield state
    finally:
        stop_cluster(directory)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster(orthanc_version: str) -> Iterator[ClusterState]:
    """The cluster most tests share, one per Orthanc version."""
    with running_cluster("shared", orthanc_version, ORTHANC_CONFIG) as state:
        yield state


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

"""Two Orthanc servers played by FakeOrthanc, and a registry in memory that knows them; a real PostgreSQL
server for the session (started as the local cluster starts its own, as an unprivileged user)."""

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from orthanc_jobs.cluster import processes
from orthanc_jobs.cluster.binaries import find_binaries
from orthanc_jobs.cluster.starters import start_postgresql
from orthanc_jobs.cluster.state import ClusterState
from orthanc_jobs.core.registry import Registry
from tests.unit.fake_orthanc import FakeOrthanc, registry_of

URLS = ["http://127.0.0.1:8001", "http://127.0.0.1:8002"]


@pytest.fixture
def orthanc() -> FakeOrthanc:
    fake = FakeOrthanc()
    for url in URLS:
        fake.add_server(url)
    return fake


@pytest.fixture
def registry() -> Registry:
    return registry_of(URLS)


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    # Not under pytest's private tmp folder: PostgreSQL runs as another user and must reach it.
    directory = Path(tempfile.mkdtemp(prefix="orthanc-jobs-store-"))
    (directory / "logs").mkdir()
    state = ClusterState(directory=str(directory), lb_url="", service_url="", orthanc_urls={}, secret="")
    try:
        port = start_postgresql(state, directory, find_binaries(), say=lambda *_: None)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        processes.stop(state.processes)
        shutil.rmtree(directory, ignore_errors=True)

"""Both stores, on real backends: a SQLite file, and a PostgreSQL server started for the session (as the
local cluster starts its own, as an unprivileged user)."""

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orthanc_jobs.cluster import processes
from orthanc_jobs.cluster.binaries import find_binaries
from orthanc_jobs.cluster.starters import start_postgresql
from orthanc_jobs.cluster.state import ClusterState
from orthanc_jobs.core.store import Store, open_store

BACKENDS = ["sqlite", "postgresql"]


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


@pytest.fixture(params=BACKENDS)
def open_history(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Opens the same history each time it is called (a file, or a schema of its own in PostgreSQL)."""
    if request.param == "sqlite":
        database, schema = str(tmp_path / "history.sqlite3"), "orthanc_jobs"
    else:
        database = request.getfixturevalue("postgresql_url")
        schema = f"test_{uuid.uuid4().hex[:12]}"
    opened: list[Store] = []

    def open_it() -> Store:
        store = open_store(database, schema)
        opened.append(store)
        return store

    yield open_it
    for store in opened:
        with contextlib.suppress(Exception):  # closed by the test already
            store.close()

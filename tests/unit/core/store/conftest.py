"""Both stores, on real backends: a SQLite file, and the PostgreSQL server of the session (../conftest.py)."""

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orthanc_jobs.core.store import Store, open_store

BACKENDS = ["sqlite", "postgresql"]


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

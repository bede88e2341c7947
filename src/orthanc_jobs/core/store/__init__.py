"""Where the registry keeps what must outlive it, behind one small interface."""

from orthanc_jobs.core.store.base import Store
from orthanc_jobs.core.store.sqlite import SqliteStore

__all__ = ["SqliteStore", "Store", "open_store"]


def open_store(database: str, schema: str = "orthanc_jobs", replica: str = "") -> Store:
    """The store a ``database`` setting names: ``postgresql://...`` (in ``schema``, written by ``replica``),
    else a SQLite file."""
    from orthanc_jobs.core.store.postgres import PostgresStore, is_postgresql_url

    if is_postgresql_url(database):
        return PostgresStore(database, schema, replica=replica)
    return SqliteStore(database)

"""Where the registry keeps what must outlive it, behind one small interface."""

from orthanc_jobs.core.store.base import Store
from orthanc_jobs.core.store.sqlite import SqliteStore

__all__ = ["SqliteStore", "Store"]

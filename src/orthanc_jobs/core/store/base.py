from typing import Protocol

from orthanc_jobs.core.changes import Change, JobChanged, JobRemoved, ServerChanged, ServerSeen
from orthanc_jobs.core.model import Job, Server


class Store(Protocol):
    """Persistence of the registry. The registry keeps its own indexes in memory; the store hears of
    every change as the registry's first subscriber (``record``).

    ``record`` (through ``save_*`` and ``delete_job``) only notes a change: it is called on the event loop,
    on every job event. ``take_pending`` hands the noted changes over and ``write`` stores them, from a
    worker thread.
    """

    def load(self) -> tuple[list[Server], list[Job]]: ...

    def record(self, change: Change) -> None: ...

    def save_server(self, server: Server) -> None: ...

    def save_job(self, job: Job) -> None: ...

    def delete_job(self, job_id: str) -> None: ...

    def take_pending(self) -> tuple[dict[str, Job | None], dict[str, Server]]: ...

    def restore_pending(self, jobs: dict[str, Job | None], servers: dict[str, Server]) -> None: ...

    def write(self, jobs: dict[str, Job | None], servers: dict[str, Server]) -> None: ...

    def close(self) -> None: ...


def record_change(store: Store, change: Change) -> None:
    """What a change means to a store: the one place it is decided (stores call it from ``record``)."""
    match change:
        case JobChanged(job):
            store.save_job(job)
        case JobRemoved(job_id):
            store.delete_job(job_id)
        case ServerChanged(server) | ServerSeen(server):
            store.save_server(server)

from typing import Protocol

from orthanc_jobs.core.model import Job, Server


class Store(Protocol):
    """Persistence of the registry. The registry keeps its own indexes in memory and writes through.

    ``save_*`` and ``delete_job`` only note a change (they are called on the event loop, on every job
    event); ``take_pending`` hands the noted changes over and ``write`` stores them, from a worker thread.
    """

    def load(self) -> tuple[list[Server], list[Job]]: ...

    def save_server(self, server: Server) -> None: ...

    def save_job(self, job: Job) -> None: ...

    def delete_job(self, job_id: str) -> None: ...

    def take_pending(self) -> tuple[dict[str, Job | None], dict[str, Server]]: ...

    def restore_pending(self, jobs: dict[str, Job | None], servers: dict[str, Server]) -> None: ...

    def write(self, jobs: dict[str, Job | None], servers: dict[str, Server]) -> None: ...

    def close(self) -> None: ...

from typing import Protocol

from orthanc_jobs.model import Job, Server


class Store(Protocol):
    """Persistence of the registry. The registry keeps its own indexes in memory and writes through."""

    def load(self) -> tuple[list[Server], list[Job]]: ...

    def save_server(self, server: Server) -> None: ...

    def save_job(self, job: Job) -> None: ...

    def delete_job(self, job_id: str) -> None: ...

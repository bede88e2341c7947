from orthanc_jobs.model import Job, Server


class MemoryStore:
    """Keeps everything in this process: a restart of the job-service starts from an empty registry."""

    def __init__(self) -> None:
        self._servers: dict[str, Server] = {}
        self._jobs: dict[str, Job] = {}

    def load(self) -> tuple[list[Server], list[Job]]:
        return list(self._servers.values()), list(self._jobs.values())

    def save_server(self, server: Server) -> None:
        self._servers[server.url] = server

    def save_job(self, job: Job) -> None:
        self._jobs[job.id] = job

    def delete_job(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

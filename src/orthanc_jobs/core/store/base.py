from typing import Any, Protocol

import orjson

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


class PendingChanges:
    """The changes a store has noted and not written yet, newest kept (the part every store shares).

    Noting is cheap and happens on the event loop; ``take_pending`` hands everything over to ``write``,
    which a store implements, in a worker thread; a failed write gives it back (``restore_pending``).
    """

    def __init__(self) -> None:
        self._jobs: dict[str, Job | None] = {}  # None: delete
        self._servers: dict[str, Server] = {}

    def record(self, change: Change) -> None:
        """What a change means to a store: the one place it is decided."""
        match change:
            case JobChanged(job):
                self.save_job(job)
            case JobRemoved(job_id):
                self.delete_job(job_id)
            case ServerChanged(server) | ServerSeen(server):
                self.save_server(server)

    def save_server(self, server: Server) -> None:
        self._servers[server.url] = server

    def save_job(self, job: Job) -> None:
        self._jobs[job.id] = job

    def delete_job(self, job_id: str) -> None:
        self._jobs[job_id] = None

    def restore_pending(self, jobs: dict[str, Job | None], servers: dict[str, Server]) -> None:
        """Put back what a failed ``write`` was handed, under the changes noted since (newer)."""
        self._jobs = {**jobs, **self._jobs}
        self._servers = {**servers, **self._servers}

    def take_pending(self) -> tuple[dict[str, Job | None], dict[str, Server]]:
        """Hand over what is waiting to be written (on the event loop's thread)."""
        jobs, servers = self._jobs, self._servers
        self._jobs, self._servers = {}, {}
        return jobs, servers

    def write(self, jobs: dict[str, Job | None], servers: dict[str, Server]) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Write at once what is noted (a store used on its own; the service's writes go through the
        housekeeper, from a worker thread)."""
        self.write(*self.take_pending())


#: The columns of a job and of a server, in the order ``job_row`` and ``server_row`` give them.
JOB_COLUMNS = (
    "id",
    "server_url",
    "incarnation",
    "first_seen",
    "finished_at",
    "history_only",
    "presumed",
    "content",
)
SERVER_COLUMNS = (
    "url",
    "name",
    "incarnation",
    "token",
    "registered_at",
    "last_seen",
    "stopped",
    "orthanc_version",
    "gap",
)


def job_row(job: Job) -> tuple[Any, ...]:
    """A job as stored (its content serialised once already)."""
    return (
        job.id,
        job.server_url,
        job.incarnation,
        job.first_seen,
        job.finished_at,
        job.history_only,
        job.presumed,
        job.json_head + b"}",
    )


def job_from_row(row: tuple[Any, ...]) -> Job:
    _, server_url, incarnation, first_seen, finished_at, history_only, presumed, content = row
    return Job.from_content(
        orjson.loads(content),
        server_url=server_url,
        incarnation=incarnation,
        first_seen=first_seen,
        finished_at=finished_at,
        history_only=bool(history_only),
        presumed=bool(presumed),
    )


def server_row(server: Server, gap: Any) -> tuple[Any, ...]:
    """A server as stored; ``gap`` is its gap as the backend keeps JSON."""
    return (
        server.url,
        server.name,
        server.incarnation,
        server.token,
        server.registered_at,
        server.last_seen,
        server.stopped,
        server.orthanc_version,
        gap,
    )


def server_from_row(row: tuple[Any, ...], gap: dict[str, Any] | None) -> Server:
    url, name, incarnation, token, registered_at, last_seen, stopped, orthanc_version, _ = row
    return Server(
        url=url,
        name=name,
        incarnation=incarnation,
        token=token,
        registered_at=registered_at,
        last_seen=last_seen,
        stopped=bool(stopped),
        orthanc_version=orthanc_version,
        gap=gap,
    )

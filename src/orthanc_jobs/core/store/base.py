from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from orthanc_jobs.core.changes import (
    ActionProgress,
    Change,
    JobChanged,
    JobRemoved,
    JobStuck,
    ServerChanged,
    ServerSeen,
)
from orthanc_jobs.core.model import Job, Server

#: How a change shows on the event stream: (kind, data), or None (api/wire.py ``frame_for``).
Framer = Callable[[Change], "tuple[str, bytes] | None"]


@dataclass(slots=True)
class Pending:
    """Changes noted and not written yet, newest kept: what ``take_pending`` hands to ``write``.

    ``frames`` holds, for a store that tells other replicas (PostgreSQL), how each job (``job:ID``) and
    server (``server:URL``) change shows on the event stream, so that every replica streams the same events.
    """

    jobs: dict[str, Job | None] = field(default_factory=dict)  # None: delete
    servers: dict[str, Server] = field(default_factory=dict)
    frames: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.jobs or self.servers or self.frames)

    def under(self, newer: "Pending") -> "Pending":
        """These changes with ``newer`` ones on top (a failed write given back)."""
        return Pending(
            {**self.jobs, **newer.jobs}, {**self.servers, **newer.servers}, {**self.frames, **newer.frames}
        )


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

    def take_pending(self) -> Pending: ...

    def restore_pending(self, pending: Pending) -> None: ...

    def write(self, pending: Pending) -> None: ...

    def close(self) -> None: ...


class PendingChanges:
    """The changes a store has noted and not written yet, newest kept (the part every store shares).

    Noting is cheap and happens on the event loop; ``take_pending`` hands everything over to ``write``,
    which a store implements, in a worker thread; a failed write gives it back (``restore_pending``).
    With a ``framer`` (set by a store whose changes other replicas stream), each change's event is noted too.
    """

    framer: Framer | None = None

    def __init__(self) -> None:
        self._pending = Pending()

    def record(self, change: Change) -> None:
        """What a change means to a store: the one place it is decided."""
        match change:
            case JobChanged(job):
                self.save_job(job)
                key = "job:" + job.id
            case JobRemoved(job_id):
                self.delete_job(job_id)
                key = "job:" + job_id
            case JobStuck(job):
                key = "job:" + job.id  # nothing to keep: the replicas' event streams are told
            case ActionProgress(action_id):
                key = "action:" + action_id
            case ServerChanged(server) | ServerSeen(server):
                self.save_server(server)
                key = "server:" + server.url
        if self.framer is not None:
            frame = self.framer(change)
            if frame is not None:
                self._pending.frames[key] = frame
            elif not isinstance(change, ServerSeen):
                self._pending.frames.pop(key, None)

    def save_server(self, server: Server) -> None:
        self._pending.servers[server.url] = server

    def save_job(self, job: Job) -> None:
        self._pending.jobs[job.id] = job

    def delete_job(self, job_id: str) -> None:
        self._pending.jobs[job_id] = None

    def is_pending(self, job_id: str) -> bool:
        return job_id in self._pending.jobs

    def forget_pending_job(self, job_id: str) -> None:
        """Another replica wrote a newer state of this job: what was noted here is older, not to write."""
        self._pending.jobs.pop(job_id, None)
        self._pending.frames.pop("job:" + job_id, None)

    def restore_pending(self, pending: Pending) -> None:
        """Put back what a failed ``write`` was handed, under the changes noted since (newer)."""
        self._pending = pending.under(self._pending)

    def take_pending(self) -> Pending:
        """Hand over what is waiting to be written (on the event loop's thread)."""
        pending, self._pending = self._pending, Pending()
        return pending

    def write(self, pending: Pending) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Write at once what is noted (a store used on its own; the service's writes go through the
        housekeeper, from a worker thread)."""
        self.write(self.take_pending())


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
    serialised = bytes(content).rstrip()
    return Job.from_content(
        orjson.loads(serialised),
        # As written (job_row); anything else is written again.
        serialised=serialised if serialised.endswith(b"}") else None,
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

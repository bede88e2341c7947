"""What the registry tells its subscribers after each change: small typed notices.

The registry is the one place where job and server state changes; it knows nothing of who listens. The
store writes what the notices carry, the event log turns them into Server-Sent Events (api/wire.py), and
any other subscriber reads them the same way.
"""

from collections.abc import Callable
from dataclasses import dataclass

from orthanc_jobs.core.model import Job, Server

__all__ = [
    "ActionProgress",
    "Change",
    "JobChanged",
    "JobRemoved",
    "JobStuck",
    "ServerChanged",
    "ServerSeen",
    "Subscriber",
]


@dataclass(frozen=True, slots=True)
class JobChanged:
    """A job is new, or what is known of it changed (its JSON, its owner's view of it)."""

    job: Job
    #: Its state before the change (None: the job is new here).
    previous_state: str | None = None
    #: The job started for the first time (not again after a resubmit, a pause, a retry).
    first_start: bool = False
    #: The job ended (a first end, or a new one after a resubmit): Job.ended_after.
    ended: bool = False

    @classmethod
    def of(cls, job: Job, previous: Job | None) -> "JobChanged":
        """The notice of ``job`` replacing ``previous`` (None: new here)."""
        return cls(
            job,
            previous.state if previous is not None else None,
            first_start=job.started_after(previous),
            ended=job.ended_after(previous),
        )


@dataclass(frozen=True, slots=True)
class JobRemoved:
    """A job left the registry (deleted on its owner, or pruned from the history)."""

    job_id: str


@dataclass(frozen=True, slots=True)
class JobStuck:
    """A running job's progress has not moved for the configured time (``stuck``), or it moved again
    after it was told stuck (not ``stuck``). Decided by the leading replica only; nothing to store."""

    job: Job
    stuck: bool


@dataclass(frozen=True, slots=True)
class ServerChanged:
    """A server registered, changed status or reported a gap: what its entry shows changed."""

    server: Server


@dataclass(frozen=True, slots=True)
class ServerSeen:
    """A server's bookkeeping changed (seen alive, resynchronised, said it stops): to keep, not to show."""

    server: Server


@dataclass(frozen=True, slots=True)
class ActionProgress:
    """How far an action on many jobs went (core/bulk.py): its summary, as the API writes it. It changes
    no state; told through the registry so that every replica's event stream shows it."""

    action_id: str
    summary: bytes


Change = JobChanged | JobRemoved | JobStuck | ServerChanged | ServerSeen | ActionProgress
Subscriber = Callable[[Change], None]

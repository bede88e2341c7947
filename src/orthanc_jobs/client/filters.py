"""What to ask ``GET /jobs`` for (:class:`JobFilter`) and what it answers (:class:`JobPage`)."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from orthanc_jobs.core.filters import JobQuery, ResourceSearch, TextSearch, TimeRange
from orthanc_jobs.core.model import Job

__all__ = ["JobFilter", "JobPage"]


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of ``GET /jobs``: the jobs (objects, or ids without expand) and ``X-Total-Count``."""

    jobs: list[Any]
    total: int | None
    offset: int = 0


def _split(values: Iterable[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


@dataclass(frozen=True, slots=True)
class JobFilter:
    """The filters of ``GET /jobs``, also applied locally to streamed jobs (``watch``).

    States and types match in any case; servers by exact ``Name`` or ``Url``, as the API matches them;
    times are written as the API reads them (``20250101T120000``, ``2025-01-01T12:00:00Z``, ``2025-01-01``),
    ``until`` including all it says (a date: the whole day); ``text`` is searched for in the ID, Type,
    Content, ErrorDescription and ErrorDetails, in any case; ``resource`` is an Orthanc id the Content names.
    Matched locally by the service's own rules (core/filters.py). A time or resource that cannot be read
    raises ValueError.
    """

    states: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    created_since: str | None = None
    created_until: str | None = None
    completed_since: str | None = None
    completed_until: str | None = None
    text: str | None = None
    resource: str | None = None
    #: The criteria judged by the service's rules (all but states, types and servers); None: none.
    _query: JobQuery | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        created, completed = (
            self.created_since or self.created_until,
            self.completed_since or self.completed_until,
        )
        query = JobQuery(
            ids=frozenset(value.lower() for value in self.ids) or None,
            created=TimeRange.between(self.created_since, self.created_until) if created else None,
            completed=TimeRange.between(self.completed_since, self.completed_until) if completed else None,
            text=TextSearch(self.text) if self.text else None,
            resource=ResourceSearch(self.resource) if self.resource else None,
        )
        object.__setattr__(self, "_query", query if query != JobQuery() else None)

    @classmethod
    def of(
        cls,
        states: Iterable[str] = (),
        types: Iterable[str] = (),
        servers: Iterable[str] = (),
        ids: Iterable[str] = (),
        **criteria: str | None,
    ) -> "JobFilter":
        """From command-line values, repeated or comma-separated; ``criteria``: the single-valued fields
        (``created_since``, ``text``...), empty ones left out."""
        given = {name: value.strip() for name, value in criteria.items() if value and value.strip()}
        return cls(
            tuple(_split(states)), tuple(_split(types)), tuple(_split(servers)), tuple(_split(ids)), **given
        )

    def params(self) -> list[tuple[str, str]]:
        """The listing's query parameters."""
        single = {
            "created-since": self.created_since,
            "created-until": self.created_until,
            "completed-since": self.completed_since,
            "completed-until": self.completed_until,
            "q": self.text,
            "resource": self.resource,
        }
        return (
            [("status", value) for value in self.states]
            + [("type", value) for value in self.types]
            + [("server", value) for value in self.servers]
            + ([("ids", ",".join(self.ids))] if self.ids else [])
            + [(name, value) for name, value in single.items() if value]
        )

    def matches(self, job: dict[str, Any]) -> bool:
        if self.states and str(job.get("State", "")).lower() not in {s.lower() for s in self.states}:
            return False
        if self.types and str(job.get("Type", "")).lower() not in {t.lower() for t in self.types}:
            return False
        if self.servers:
            server = job.get("Server") or {}
            if server.get("Name") not in self.servers and server.get("Url") not in self.servers:
                return False
        if self._query is None:
            return True
        try:
            as_kept = Job.from_content(job, server_url="", incarnation="", first_seen=0.0)
        except (KeyError, TypeError, ValueError):
            return False  # not a job's JSON
        return self._query.matches(as_kept)

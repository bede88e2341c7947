"""What to ask ``GET /jobs`` for (:class:`JobFilter`) and what it answers (:class:`JobPage`)."""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

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
    """The filters of ``GET /jobs`` (states, types, servers), also applied locally to streamed jobs.

    States and types match in any case; servers by exact ``Name`` or ``Url``, as the API matches them.
    """

    states: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()

    @classmethod
    def of(
        cls, states: Iterable[str] = (), types: Iterable[str] = (), servers: Iterable[str] = ()
    ) -> "JobFilter":
        """From command-line values, repeated or comma-separated."""
        return cls(tuple(_split(states)), tuple(_split(types)), tuple(_split(servers)))

    def params(self) -> list[tuple[str, str]]:
        return (
            [("status", value) for value in self.states]
            + [("type", value) for value in self.types]
            + [("server", value) for value in self.servers]
        )

    def matches(self, job: dict[str, Any]) -> bool:
        if self.states and str(job.get("State", "")).lower() not in {s.lower() for s in self.states}:
            return False
        if self.types and str(job.get("Type", "")).lower() not in {t.lower() for t in self.types}:
            return False
        if self.servers:
            server = job.get("Server") or {}
            return server.get("Name") in self.servers or server.get("Url") in self.servers
        return True

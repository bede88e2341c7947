"""The job-service's replicas in the local cluster: their names, the database they share, and what each
says of itself on ``/healthz``.

Every replica is the same ``orthanc-jobs serve`` on a port of its own, with the same settings and secret,
and answers every route; they share the cluster's PostgreSQL, where one of them holds the lease that makes
it the leader.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from orthanc_jobs.cluster import ClusterError

#: The one job-service of a cluster without replicas (its name before replicas existed).
SINGLE_SERVICE_NAME = "job-service"
SERVICE_DATABASES = ("sqlite", "postgresql")


def replica_names(count: int) -> list[str]:
    """``job-service`` alone, else ``job-service-1`` .. ``job-service-N``."""
    if count < 1:
        raise ClusterError("--service-replicas must be at least 1")
    if count == 1:
        return [SINGLE_SERVICE_NAME]
    return [f"{SINGLE_SERVICE_NAME}-{number}" for number in range(1, count + 1)]


def service_database_for(replicas: int, requested: str | None) -> str:
    """Where the replicas keep their history: SQLite by default for one replica, the cluster's PostgreSQL
    for several, which a SQLite file cannot serve."""
    if requested is not None and requested not in SERVICE_DATABASES:
        raise ClusterError(f"the job-service's database is 'sqlite' or 'postgresql', not {requested!r}")
    if requested is None:
        return "sqlite" if replicas == 1 else "postgresql"
    if requested == "sqlite" and replicas > 1:
        raise ClusterError(
            f"sqlite is for one replica only: {replicas} replicas share the cluster's PostgreSQL "
            "(give postgresql, or leave --service-database out)"
        )
    return requested


@dataclass(frozen=True)
class ReplicaHealth:
    """What a replica answered on ``/healthz``."""

    answered: bool
    #: Whether it holds the lease; None when it does not say (a job-service from before replicas).
    leader: bool | None = None


def ask_replicas(
    urls: Mapping[str, str], transport: httpx.BaseTransport | None = None, timeout: float = 1.0
) -> dict[str, ReplicaHealth]:
    """Each replica's ``/healthz``, by name; one that does not answer within ``timeout`` is said so."""
    with httpx.Client(transport=transport, timeout=timeout) as client:
        return {name: _ask(client, url) for name, url in urls.items()}


def _ask(client: httpx.Client, url: str) -> ReplicaHealth:
    try:
        answer = client.get(f"{url}/healthz")
        body = answer.json() if answer.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return ReplicaHealth(answered=False)
    if not isinstance(body, dict):
        return ReplicaHealth(answered=False)
    leader = body.get("Leader")
    return ReplicaHealth(answered=True, leader=leader if isinstance(leader, bool) else None)

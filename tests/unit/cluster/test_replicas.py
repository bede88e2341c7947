"""The job-service's replicas: names, the database they share, and what /healthz tells of each."""

import httpx
import pytest

from orthanc_jobs.cluster import ClusterError
from orthanc_jobs.cluster.replicas import ReplicaHealth, ask_replicas, replica_names, service_database_for


def test_one_replica_keeps_its_name_and_several_are_numbered() -> None:
    assert replica_names(1) == ["job-service"]
    assert replica_names(3) == ["job-service-1", "job-service-2", "job-service-3"]
    with pytest.raises(ClusterError):
        replica_names(0)


def test_sqlite_is_the_default_of_one_replica_and_postgresql_of_several() -> None:
    assert service_database_for(1, None) == "sqlite"
    assert service_database_for(1, "postgresql") == "postgresql"
    assert service_database_for(2, None) == "postgresql"
    assert service_database_for(2, "postgresql") == "postgresql"


def test_replicas_cannot_share_a_sqlite_file() -> None:
    with pytest.raises(ClusterError, match="one replica only: 2 replicas share the cluster's PostgreSQL"):
        service_database_for(2, "sqlite")
    with pytest.raises(ClusterError, match="'sqlite' or 'postgresql'"):
        service_database_for(1, "mysql")


def test_each_replica_says_whether_it_leads_and_one_that_does_not_answer_is_told_apart() -> None:
    answers = {
        "127.0.0.1:8051": httpx.Response(200, json={"Status": "ok", "Replica": "a", "Leader": True}),
        "127.0.0.1:8052": httpx.Response(200, json={"Status": "ok", "Replica": "b", "Leader": False}),
        "127.0.0.1:8053": httpx.Response(200, json={"Status": "ok"}),  # a service from before replicas
        "127.0.0.1:8054": httpx.Response(503, json={"Status": "starting"}),
        "127.0.0.1:8055": httpx.Response(200, text="not json"),
    }
    asked = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.netloc.decode() == "127.0.0.1:8056":
            raise httpx.ConnectError("refused", request=request)
        return answers[request.url.netloc.decode()]

    urls = {name: f"http://127.0.0.1:{8051 + number}" for number, name in enumerate("abcdef")}
    health = ask_replicas(urls, transport=httpx.MockTransport(handler))

    assert health == {
        "a": ReplicaHealth(answered=True, leader=True),
        "b": ReplicaHealth(answered=True, leader=False),
        "c": ReplicaHealth(answered=True, leader=None),
        "d": ReplicaHealth(answered=False),
        "e": ReplicaHealth(answered=False),
        "f": ReplicaHealth(answered=False),
    }
    assert set(asked) == {"/healthz"}

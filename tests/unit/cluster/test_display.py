"""What ``cluster up`` and ``cluster status`` print."""

import os

from orthanc_jobs.cluster.display import describe, status_lines
from orthanc_jobs.cluster.processes import OwnedProcess
from orthanc_jobs.cluster.replicas import ReplicaHealth
from orthanc_jobs.cluster.state import ClusterState

REPLICAS = {f"job-service-{n}": f"http://127.0.0.1:805{n}" for n in (1, 2, 3)}
#: No process has this id (over Linux's largest).
NO_PID = 2**22 + 1


def _running(name: str) -> OwnedProcess:
    """A process that runs: this one."""
    return OwnedProcess("job-service", name, os.getpid(), "python", "/dev/null")


def _state(processes: list[OwnedProcess], service_urls: dict[str, str]) -> ClusterState:
    first = next(iter(service_urls.values()))
    return ClusterState("/c", "http://127.0.0.1:8042", first, {}, "s", processes, dict(service_urls))


def test_status_shows_which_replica_leads_and_which_does_not_answer() -> None:
    stopped = OwnedProcess("job-service", "job-service-3", NO_PID, "python", "/dev/null")
    state = _state([_running("job-service-1"), _running("job-service-2"), stopped], REPLICAS)
    health = {
        "job-service-1": ReplicaHealth(answered=True, leader=False),
        "job-service-2": ReplicaHealth(answered=True, leader=True),
        "job-service-3": ReplicaHealth(answered=False),
    }

    lines, healthy = status_lines(state, health)

    assert lines[0].startswith("job-service-1") and lines[0].endswith("running  follower")
    assert lines[1].endswith("running  leader")
    assert lines[2].endswith("NOT RUNNING")
    assert not healthy


def test_a_running_replica_that_does_not_answer_is_not_healthy() -> None:
    state = _state([_running("job-service-1"), _running("job-service-2")], dict(list(REPLICAS.items())[:2]))
    health = {
        "job-service-1": ReplicaHealth(answered=True, leader=True),
        "job-service-2": ReplicaHealth(answered=False),
    }

    lines, healthy = status_lines(state, health)

    assert lines[1].endswith("running  NOT ANSWERING on /healthz")
    assert not healthy


def test_a_service_that_does_not_say_who_leads_shows_nothing_of_it() -> None:
    state = _state([_running("job-service")], {"job-service": "http://127.0.0.1:8050"})

    lines, healthy = status_lines(state, {"job-service": ReplicaHealth(answered=True)})
    assert lines[0].endswith("running")
    assert healthy
    assert status_lines(state) == (lines, True)


def test_up_prints_every_replica() -> None:
    several = describe(_state([], REPLICAS))
    assert "Job-service, 3 replicas" in several
    for name, url in REPLICAS.items():
        assert f"  {name}:" in several and url in several

    one = describe(_state([], {"job-service": "http://127.0.0.1:8050"}))
    assert "Job-service (direct):     http://127.0.0.1:8050" in one
    assert "replicas" not in one

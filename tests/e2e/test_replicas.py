"""Two job-service replicas on the cluster's PostgreSQL, behind the cluster's nginx: a replica killed or
restarted under load costs clients nothing, the leader's death is taken over, event streams resume on the
other replica, and PostgreSQL's absence is survived."""

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from orthanc_jobs.cluster.launcher import DEMO_USER, ClusterState
from tests.e2e.conftest import ORTHANC_CONFIG, running_cluster
from tests.e2e.helpers import (
    Clients,
    JobMaker,
    SilentModality,
    cli,
    create_async_job,
    create_study,
    direct,
    pid_of,
    wait_for,
    wait_job_state,
)

pytestmark = pytest.mark.e2e

SETTINGS = {"not_responding_after": "2", "stopped_after": "6", "poll_interval": "0.5", "resync_interval": "5"}
REPLICAS = ["job-service-1", "job-service-2"]
CLIENTS = 200


@pytest.fixture(scope="module")
def replicated(orthanc_version: str) -> Iterator[ClusterState]:
    database = "postgresql"
    with running_cluster(
        "replicas", orthanc_version, ORTHANC_CONFIG, SETTINGS, service_database=database, service_replicas=2
    ) as state:
        yield state


def replica_url(cluster: ClusterState, name: str) -> str:
    return cluster.service_urls[name]


def health(cluster: ClusterState, name: str) -> dict | None:
    try:
        return httpx.get(f"{replica_url(cluster, name)}/healthz", timeout=2).json()  # type: ignore[no-any-return]
    except httpx.HTTPError:
        return None


def leader_of(cluster: ClusterState) -> str | None:
    leaders = [name for name in REPLICAS if (health(cluster, name) or {}).get("Leader")]
    assert len(leaders) <= 1, f"two replicas lead: {leaders}"
    return leaders[0] if leaders else None


def database_url(cluster: ClusterState) -> str:
    state = ClusterState.load(Path(cluster.directory))
    return next(p.env["ORTHANC_JOBS_DATABASE"] for p in state.processes if p.name == REPLICAS[0])


def studies_and_jobs(lb: httpx.Client, label: str) -> tuple[list[str], list[str]]:
    studies = [create_study(lb, f"{label}{n}")[0] for n in range(3)]
    jobs = [create_async_job(lb, "archive", study) for study in studies]
    for job_id in jobs:
        wait_job_state(lb, job_id, {"Success"})
    return studies, jobs


def assert_every_replica_has_the_true_end_states(cluster: ClusterState, job_ids: list[str]) -> None:
    """Every job as its owner ended it, on every replica."""
    owners = {name: direct(cluster, name) for name in cluster.orthanc_urls}
    truth: dict[str, str] = {}
    for job_id in job_ids:
        for client in owners.values():
            answer = client.get(f"/jobs/{job_id}")
            if answer.status_code == 200:
                truth[job_id] = answer.json()["State"]
    for client in owners.values():
        client.close()
    assert len(truth) == len(job_ids) and set(truth.values()) == {"Success"}
    for name in REPLICAS:
        with httpx.Client(base_url=replica_url(cluster, name), auth=DEMO_USER, timeout=30) as replica:
            wait_for(
                lambda replica=replica: (
                    {
                        job["ID"]: job["State"]
                        for job in replica.get("/jobs", params={"expand": ""}).json()
                        if job["ID"] in truth
                    }
                    == truth
                ),
                timeout=20,
                what=f"the true end state of {len(truth)} jobs on {name}",
            )


def test_a_replica_killed_under_load_costs_no_client_request(replicated: ClusterState) -> None:
    with httpx.Client(base_url=replicated.orthanc_lb_url, auth=DEMO_USER, timeout=30) as lb:
        studies, polled = studies_and_jobs(lb, "KILLED")
        with Clients(replicated, polled, CLIENTS) as clients, JobMaker(replicated, studies) as maker:
            time.sleep(3)
            os.kill(pid_of(replicated, "job-service-2"), signal.SIGKILL)
            answered_before = clients.answered
            time.sleep(4)
            answered_while_dead = clients.answered - answered_before
            cli(replicated, "start", "job-service-2")
            time.sleep(3)
        assert clients.failures == [], f"{len(clients.failures)} failed: {clients.failures[:5]}"
        # The clients went on being answered while one replica was dead (how many depends on the machine).
        assert answered_while_dead >= 10
        for job_id in maker.ids:
            wait_job_state(lb, job_id, {"Success"})
    assert len(maker.ids) > 20 and maker.failures == []
    assert_every_replica_has_the_true_end_states(replicated, polled + maker.ids)


def test_a_rolling_restart_of_every_replica_costs_no_client_request(replicated: ClusterState) -> None:
    with httpx.Client(base_url=replicated.orthanc_lb_url, auth=DEMO_USER, timeout=30) as lb:
        studies, polled = studies_and_jobs(lb, "ROLLING")
        with (
            Clients(replicated, polled, CLIENTS) as clients,
            Clients(replicated, polled, 10, actions=True) as actions,
            JobMaker(replicated, studies) as maker,
        ):
            time.sleep(2)
            for name in REPLICAS:
                before = pid_of(replicated, name)
                cli(replicated, "restart", name)
                assert pid_of(replicated, name) != before
                time.sleep(2)
        assert clients.failures == [], f"{len(clients.failures)} failed: {clients.failures[:5]}"
        # Actions too: a stopping replica answers what comes on the connections nginx keeps, then closes them.
        assert actions.failures == [], f"{len(actions.failures)} actions failed: {actions.failures[:5]}"
        assert actions.answered > 0
        for job_id in maker.ids:
            wait_job_state(lb, job_id, {"Success"})
    assert maker.failures == []
    assert_every_replica_has_the_true_end_states(replicated, polled + maker.ids)


class EventClient:
    """Reads a replica's event stream (directly, not through nginx), and resumes elsewhere when asked."""

    def __init__(self, url: str) -> None:
        self.events: list[tuple[int, str, str]] = []
        #: Set once a stream is open and subscribed (its ": connected" line): what happens after is in it.
        self.connected = threading.Event()
        self._url = url
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def resume_on(self, url: str) -> None:
        self._url = url

    def _run(self) -> None:
        while not self._stopping.is_set():
            headers = {"Last-Event-ID": str(self.events[-1][0])} if self.events else {}
            try:
                with httpx.stream(
                    "GET", f"{self._url}/orthanc-jobs/events", auth=DEMO_USER, headers=headers, timeout=30
                ) as stream:
                    event_id, kind = 0, ""
                    for line in stream.iter_lines():
                        if self._stopping.is_set():
                            return
                        if line.startswith("id: "):
                            event_id = int(line[4:])
                        elif line.startswith("event: "):
                            kind = line[7:]
                        elif line == ": connected":
                            self.connected.set()
                        elif line.startswith("data: ") and event_id:
                            self.events.append((event_id, kind, line[6:]))
                            event_id = 0
            except httpx.HTTPError:
                time.sleep(0.2)

    def stop(self) -> None:
        self._stopping.set()


def test_a_stream_whose_replica_dies_resumes_on_another_with_exactly_what_it_missed(
    replicated: ClusterState,
) -> None:
    survivor = EventClient(replica_url(replicated, "job-service-1"))
    victim = EventClient(replica_url(replicated, "job-service-2"))
    try:
        # Subscribed before the jobs are made: a stream opened without Last-Event-ID starts from now (the
        # replica may still be starting, after the test before).
        wait_for(lambda: survivor.connected.is_set() and victim.connected.is_set(), what="both streams open")
        with httpx.Client(base_url=replicated.orthanc_lb_url, auth=DEMO_USER, timeout=30) as lb:
            study, _ = create_study(lb, "STREAMS")
            before = [create_async_job(lb, "archive", study) for _ in range(3)]
            for job_id in before:
                wait_job_state(lb, job_id, {"Success"})
            wait_for(lambda: victim.events and survivor.events, what="events on both streams")
            os.kill(pid_of(replicated, "job-service-2"), signal.SIGKILL)
            victim.resume_on(replica_url(replicated, "job-service-1"))
            after = [create_async_job(lb, "archive", study) for _ in range(3)]
            for job_id in after:
                wait_job_state(lb, job_id, {"Success"})
            wait_for(
                lambda: survivor.events and victim.events and victim.events[-1][0] >= survivor.events[-1][0],
                timeout=20,
                what="the resumed stream up to date",
            )
        first = max(victim.events[0][0], survivor.events[0][0])
        assert [e for e in victim.events if e[0] >= first] == [e for e in survivor.events if e[0] >= first]
        assert any(job_id in data for job_id in after for _, _, data in victim.events)
    finally:
        survivor.stop()
        victim.stop()
        cli(replicated, "start", "job-service-2")


def test_the_leader_killed_another_leads_and_a_dead_servers_jobs_are_failed_once(
    replicated: ClusterState,
) -> None:
    leader = wait_for(lambda: leader_of(replicated), timeout=20, what="a leader")
    other = next(name for name in REPLICAS if name != leader)
    modality = SilentModality()
    victim = "orthanc-3"
    try:
        with (
            direct(replicated, victim) as server,
            httpx.Client(base_url=replica_url(replicated, other), auth=DEMO_USER, timeout=30) as survivor,
        ):
            job_id = modality.store(server, create_study(server, "LEADER")[0])
            wait_job_state(survivor, job_id, {"Running"})

            killed_at = time.monotonic()
            os.kill(pid_of(replicated, leader), signal.SIGKILL)
            os.kill(pid_of(replicated, victim), signal.SIGKILL)
            wait_for(lambda: leader_of(replicated) == other, timeout=15, what=f"{other} leading")
            took_over = time.monotonic() - killed_at

            failed = wait_job_state(survivor, job_id, {"Failure"})
        assert took_over <= 15
        assert "stopped answering" in failed["ErrorDescription"] and victim in failed["ErrorDescription"]

        def failures() -> list[str]:
            with psycopg.connect(database_url(replicated)) as db:
                rows = db.execute(
                    "SELECT replica FROM orthanc_jobs.changes WHERE key = %s AND content LIKE %s",
                    (job_id, b'%"State":"Failure"%'),
                ).fetchall()
            return [replica.split("/")[0] for (replica,) in rows]  # the replica's name, then its process's id

        wait_for(failures, timeout=10, what="the failure in the change log")
        time.sleep(3)  # a second decision, if any, would be written by now
        assert failures() == [other], "failed once, by the new leader"
    finally:
        modality.close()
        cli(replicated, "start", leader)
        cli(replicated, "start", victim)


def test_postgresql_away_for_20_s_reads_go_on_on_every_replica_and_nothing_is_lost(
    replicated: ClusterState,
) -> None:
    """Orthanc's own index is in the same PostgreSQL: no job can be created meanwhile, but one that runs
    ends (a C-STORE whose modality goes away), and its end reaches every replica once PostgreSQL is back."""
    modality = SilentModality()
    with httpx.Client(base_url=replicated.orthanc_lb_url, auth=DEMO_USER, timeout=30) as lb:
        study, _ = create_study(lb, "PGAWAY")
        before = create_async_job(lb, "archive", study)
        wait_job_state(lb, before, {"Success"})
        with direct(replicated, "orthanc-1") as server:
            running = modality.store(server, create_study(server, "PGAWAY1")[0])
        wait_job_state(lb, running, {"Running"})
    replicas = {
        name: httpx.Client(base_url=replica_url(replicated, name), auth=DEMO_USER, timeout=30)
        for name in REPLICAS
    }
    cli(replicated, "stop", "postgresql")
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for replica in replicas.values():
                answer = replica.get(f"/jobs/{before}")
                assert answer.status_code == 200, answer.text
                assert before in replica.get("/jobs").json()
            if time.monotonic() > deadline - 15:
                modality.close()  # the C-STORE fails: its end is an event the service cannot write now
            time.sleep(0.5)
        for name in REPLICAS:
            assert httpx.get(f"{replica_url(replicated, name)}/readyz", timeout=10).status_code == 503
    finally:
        cli(replicated, "start", "postgresql")
    for name, replica in replicas.items():
        ready = f"{replica_url(replicated, name)}/readyz"
        wait_for(
            lambda ready=ready: httpx.get(ready, timeout=10).status_code == 200,  # type: ignore[misc]
            timeout=30,
            what=f"{name} ready again",
        )
        ended = wait_job_state(replica, running, {"Failure"})
        assert ended["ErrorCode"] != -1, "its owner's own end, not one the service made up"
        replica.close()


def test_a_job_deleted_through_one_replica_is_gone_from_the_other_and_from_the_history(
    replicated: ClusterState, orthanc_version: str
) -> None:
    if orthanc_version == "1.10":
        pytest.skip("Orthanc 1.10 has no DELETE /jobs/{id} (1.12.2 added it)")

    def stored(job_id: str) -> bool:
        with psycopg.connect(database_url(replicated)) as db:
            return (
                db.execute("SELECT 1 FROM orthanc_jobs.jobs WHERE id = %s", (job_id,)).fetchone() is not None
            )

    first, second = (
        httpx.Client(base_url=replica_url(replicated, name), auth=DEMO_USER, timeout=30) for name in REPLICAS
    )

    def owner_alive(replica: httpx.Client) -> bool:
        answer = replica.get("/orthanc-jobs/servers")
        return answer.status_code == 200 and any(
            server["Name"] == "orthanc-1" and server["Status"] == "alive" for server in answer.json()
        )

    with first, second, direct(replicated, "orthanc-1") as owner:
        # A replica restarted by an earlier test more than ORTHANC_JOBS_NOT_RESPONDING_AFTER after its last
        # heartbeat sees the servers not responding until their next one (README): a job read then is 404.
        for replica in (first, second):
            wait_for(lambda replica=replica: owner_alive(replica), timeout=15, what="orthanc-1 alive")
        study, _ = create_study(owner, "DELETE-REPLICAS")
        job_id = create_async_job(owner, "archive", study)
        for replica in (first, second):
            wait_job_state(replica, job_id, {"Success"})
        wait_for(lambda: stored(job_id), timeout=10, what="the job in the history")

        assert first.delete(f"/jobs/{job_id}").status_code == 200
        wait_for(
            lambda: second.get(f"/jobs/{job_id}").status_code == 404, timeout=5, what="gone on the other"
        )
        assert job_id not in second.get("/jobs").json()
        wait_for(lambda: not stored(job_id), timeout=5, what="gone from the history")

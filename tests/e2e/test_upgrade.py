"""The upgrade a hospital makes: a cluster of three Orthanc 1.10.1 servers, each in turn stopped and started
again as Orthanc 1.12.7 on the same PostgreSQL index and storage, while jobs are created and run and 50
clients poll their jobs through the load balancer.

Orthanc keeps its jobs in memory: what a stopped server had not finished is lost with it (the job-service
ends it as Failure, saying why), and so are the outputs of its finished jobs (404, as Orthanc says of an
unknown output). Nothing else is: no client request to ``/jobs`` fails, the history is whole, and jobs made
after the upgrade work in every way.
"""

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from orthanc_jobs.cluster.launcher import DEMO_USER, ClusterState
from tests.e2e.conftest import ORTHANC_CONFIG, orthanc_root, running_cluster
from tests.e2e.helpers import (
    TERMINAL,
    Clients,
    JobMaker,
    Unfinished,
    cli,
    create_async_job,
    create_study,
    direct,
    wait_for,
    wait_job_state,
)

pytestmark = pytest.mark.e2e

SETTINGS = {"not_responding_after": "2", "stopped_after": "6", "poll_interval": "0.5", "resync_interval": "5"}
CLIENTS = 50
OLD, NEW = "1.10.1", "1.12.7"


@pytest.fixture(scope="module")
def upgraded() -> Iterator[ClusterState]:
    """Starts on 1.10 whatever the other tests run: the test moves it to 1.12 itself."""
    with running_cluster("upgrade", "1.10", ORTHANC_CONFIG, SETTINGS) as state:
        yield state


def server_entries(cluster: ClusterState) -> dict[str, dict[str, Any]]:
    answer = httpx.get(f"{cluster.lb_url}/orthanc-jobs/servers", auth=DEMO_USER, timeout=10)
    return {server["Name"]: server for server in answer.json()}


def test_a_rolling_upgrade_from_1_10_to_1_12_costs_no_client_request(upgraded: ClusterState) -> None:
    newer = orthanc_root("1.12")
    names = sorted(upgraded.orthanc_urls)
    # Each plugin tells its Orthanc's version with a heartbeat, once Orthanc answers its REST API.
    wait_for(lambda: {e["OrthancVersion"] for e in server_entries(upgraded).values()} == {OLD}, timeout=10)

    with httpx.Client(base_url=upgraded.orthanc_lb_url, auth=DEMO_USER, timeout=30) as lb:
        # On each server: a finished archive (its output is in that process's memory), a failed C-STORE, and
        # a paused archive (unfinished when its server stops).
        finished: dict[str, str] = {}
        unfinished: dict[str, Unfinished] = {}
        for name in names:
            with direct(upgraded, name) as client:
                unfinished[name] = Unfinished(client, lb, f"UPGRADE{name[-1]}")
            unfinished[name].release()
            wait_job_state(lb, unfinished[name].running, {"Failure"})
            finished[name] = unfinished[name].pending
            wait_job_state(lb, finished[name], {"Success"})
        studies = [create_study(lb, f"MADE{n}")[0] for n in range(3)]
        before = set(lb.get("/jobs").json())
        polled = list(finished.values()) + [u.paused for u in unfinished.values()]

        with Clients(upgraded, polled, CLIENTS) as clients, JobMaker(upgraded, studies) as maker:
            stops: list[tuple[float, float]] = []
            for name in names:
                incarnation = server_entries(upgraded)[name]["Incarnation"]
                began = time.monotonic()
                cli(upgraded, "restart", name, "--orthanc-root", str(newer))
                stops.append((began, time.monotonic()))

                def upgraded_and_alive(name: str = name, incarnation: str = incarnation) -> bool:
                    entry = server_entries(upgraded)[name]
                    return (entry["Status"], entry["OrthancVersion"]) == ("alive", NEW) and entry[
                        "Incarnation"
                    ] != incarnation

                wait_for(upgraded_and_alive, timeout=20, what=f"{name} back as Orthanc {NEW}")
                lost = wait_job_state(lb, unfinished[name].paused, {"Failure"})
                assert name in lost["ErrorDescription"], lost
                gone = lb.get(f"/jobs/{finished[name]}/archive")  # the output went with the old process
                assert gone.status_code == 404 and gone.json()["HttpStatus"] == 404, gone.text
                assert lb.get(f"/jobs/{finished[name]}").json()["State"] == "Success"
            answered = clients.answered
        made = set(maker.ids)
        print(
            f"\nrolling upgrade: {answered} answers to {CLIENTS} clients; {len(made)} jobs made meanwhile, "
            f"{len(maker.failures)} creations answered 502"
        )
        assert clients.failures == [], f"{len(clients.failures)} failed: {clients.failures[:5]}"
        assert answered > 500
        # Orthanc's own route, not the job-service's: nginx does not send a POST again once it went to a
        # server that closed without answering (a stopping Orthanc): 502 (README, Compatibility).
        assert all("502 Bad Gateway" in failure for failure in maker.failures), maker.failures[:5]
        assert len(maker.failures) <= len(names) * 3, maker.failures

        # Orthanc tells its plugins that it stops (ORTHANC_STOPPED, after which the Python plugin calls no
        # callback) before its HTTP server stops: a job created in between is never reported, and is lost
        # with its process as on a lone Orthanc (SaveJobs false): its id answers 404 (README, Compatibility).
        # Only a creation answered while a server was being restarted may be so.
        unreported = {job_id for job_id in made if lb.get(f"/jobs/{job_id}").status_code == 404}
        for job_id in unreported:
            assert any(start <= maker.answered_at[job_id] <= end for start, end in stops), job_id
            assert lb.get(f"/jobs/{job_id}").json()["OrthancStatus"] == 17  # Orthanc's "Unknown resource"
        assert len(unreported) <= len(names), unreported
        made -= unreported
        if unreported:
            print(f"{len(unreported)} job(s) created by a stopping server after it told its plugins so")

        # The history is whole: every other job made before or during the upgrade is listed, and ended; those
        # that ended by a stop say which server went.
        ended = {job_id: wait_job_state(lb, job_id, TERMINAL) for job_id in before | made}
        assert set(lb.get("/jobs").json()) >= before | made
        for job in ended.values():
            if job["State"] == "Failure" and job["ID"] in made:
                assert job["Server"]["Name"] in job["ErrorDescription"], job
        assert all(ended[job_id]["State"] == "Success" for job_id in finished.values())
        entries = server_entries(upgraded)
        assert {(entries[n]["Status"], entries[n]["OrthancVersion"]) for n in names} == {("alive", NEW)}

        # Jobs made after the upgrade work in every way, on every server, through the load balancer.
        for name in names:
            with direct(upgraded, name) as client:
                study, _ = create_study(client, f"AFTER{name[-1]}")
                archive = create_async_job(client, "archive", study)
                held = Unfinished(client, lb, f"ACTIONS{name[-1]}")
            try:
                assert lb.post(f"/jobs/{held.pending}/pause").json() == {}
                assert lb.get(f"/jobs/{held.pending}").json()["State"] == "Paused"
                assert lb.post(f"/jobs/{held.pending}/resume").json() == {}
                assert lb.post(f"/jobs/{held.paused}/cancel").json() == {}
                assert lb.get(f"/jobs/{held.paused}").json()["State"] == "Failure"
            finally:
                held.release()
            assert wait_job_state(lb, held.running, {"Failure"})["Server"]["Name"] == name
            assert lb.post(f"/jobs/{held.running}/resubmit").json() == {}
            wait_job_state(lb, held.pending, {"Success"})
            job = wait_job_state(lb, archive, {"Success"})
            assert (job["Server"]["Name"], job["Server"]["Status"]) == (name, "alive")
            assert lb.get(f"/jobs/{archive}/archive").content[:2] == b"PK"
            assert lb.delete(f"/jobs/{archive}/archive").status_code == 200  # 1.12.1
            assert lb.delete(f"/jobs/{archive}").status_code == 200  # 1.12.2
            assert lb.get(f"/jobs/{archive}").status_code == 404

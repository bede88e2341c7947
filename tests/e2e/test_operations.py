"""Operating the cluster's jobs (issue #15) on a real cluster: stuck jobs flagged and cleared, actions on many
jobs through the owners, the time histograms and statistics of real jobs."""

from collections.abc import Iterator

import httpx
import pytest

from orthanc_jobs.cluster.demo import create_study
from orthanc_jobs.cluster.launcher import DEMO_USER, ClusterState
from tests.e2e.conftest import ORTHANC_CONFIG, running_cluster
from tests.e2e.helpers import (
    SilentModality,
    create_async_job,
    listening,
    wait_event,
    wait_for,
    wait_job_state,
)

pytestmark = pytest.mark.e2e

STUCK_AFTER = 3


@pytest.fixture(scope="module")
def ops_cluster(orthanc_version: str) -> Iterator[ClusterState]:
    with running_cluster("ops", orthanc_version, ORTHANC_CONFIG, {"stuck_after": str(STUCK_AFTER)}) as state:
        yield state


@pytest.fixture(scope="module")
def lb(ops_cluster: ClusterState) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ops_cluster.orthanc_lb_url, auth=DEMO_USER, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def service(ops_cluster: ClusterState) -> Iterator[httpx.Client]:
    """The job-service's own routes, through nginx."""
    with httpx.Client(base_url=ops_cluster.lb_url, auth=DEMO_USER, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def metrics(ops_cluster: ClusterState) -> str:
    """The job-service's /metrics, on its own port (nginx does not route it: Prometheus scrapes it there)."""
    return ops_cluster.service_url + "/metrics"


def _metric(metrics: str, name: str, *labels: str) -> float:
    """The sum of a metric's samples whose labels include each of ``labels`` (e.g. 'type="Archive"')."""
    text = httpx.get(metrics, timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and all(label in line for label in labels)
    )


def _metric_value(metrics: str, name: str) -> float:
    """A metric without labels."""
    line = next(
        line for line in httpx.get(metrics, timeout=10).text.splitlines() if line.startswith(name + " ")
    )
    return float(line.rsplit(" ", 1)[1])


def _act(service: httpx.Client, action: str, criteria: dict, dry_run: bool = False) -> dict:
    answer = service.post(
        "/orthanc-jobs/actions", json={"Action": action, "Filter": criteria, "DryRun": dry_run}
    )
    assert answer.status_code == (200 if dry_run else 202), answer.text
    if dry_run:
        return dict(answer.json())
    path = answer.json()["Path"]
    return dict(wait_for(lambda: (run := service.get(path).json())["State"] != "Running" and run, 60, 0.1))


def test_a_job_whose_progress_stays_still_is_stuck_until_it_ends(
    ops_cluster: ClusterState, lb: httpx.Client, metrics: str
) -> None:
    study, _ = create_study(lb, "STUCK")
    silent = SilentModality()
    try:
        with listening(ops_cluster) as events:
            job_id = silent.store(lb, study)
            flagged = wait_event(
                events,
                lambda e: (
                    e.get("event") == "job" and e["data"]["ID"] == job_id and e["data"]["Server"]["Stuck"]
                ),
                20,
            )
            assert flagged["data"]["State"] == "Running" and flagged["data"]["Server"]["StuckSince"]
            read = lb.get(f"/jobs/{job_id}").json()
            assert read["Server"]["Stuck"] is True
            listed = lb.get("/jobs", params={"expand": "", "status": "Running"}).json()
            assert [job["Server"]["Stuck"] for job in listed if job["ID"] == job_id] == [True]
            assert _metric(metrics, "orthanc_jobs_stuck_jobs", 'type="DicomModalityStore"') == 1
        with listening(ops_cluster) as events:
            silent.close()  # the modality goes: the C-STORE fails, the job ends
            ended = wait_event(
                events,
                lambda e: (
                    e.get("event") == "job" and e["data"]["ID"] == job_id and e["data"]["State"] == "Failure"
                ),
                30,
            )
            assert ended["data"]["Server"]["Stuck"] is False
        assert lb.get(f"/jobs/{job_id}").json()["Server"]["Stuck"] is False
        wait_for(lambda: _metric(metrics, "orthanc_jobs_stuck_jobs") == 0, 10, 0.2, "no stuck job left")
    finally:
        silent.close()


def test_actions_on_many_jobs_pause_resume_and_resubmit_through_their_owners(
    ops_cluster: ClusterState, lb: httpx.Client, service: httpx.Client, orthanc_version: str
) -> None:
    study, _ = create_study(lb, "MANY")
    silent = SilentModality()
    try:
        # One C-STORE to a silent modality per server holds its only slot (ConcurrentJobs 1): the archives
        # behind it stay Pending.
        blockers = set()
        for url in ops_cluster.orthanc_urls.values():
            with httpx.Client(base_url=url, auth=DEMO_USER, timeout=30) as direct:
                blockers.add(silent.store(direct, study))
        pending = {create_async_job(lb, "archive", study) for _ in range(9)}
        for job_id in pending:
            wait_job_state(lb, job_id, {"Pending"})
        criteria = {"ids": sorted(pending)}
        planned = _act(service, "resume", criteria, dry_run=True)
        assert (planned["Matching"], planned["Accepted"], planned["Refused"]) == (9, 0, 9)
        assert "Pending" in planned["RefusedReasons"][0]["Reason"]

        paused = _act(service, "pause", criteria)
        assert (paused["State"], paused["Done"], paused["Refused"], paused["Unreachable"]) == (
            "Done",
            9,
            0,
            0,
        )
        assert {lb.get(f"/jobs/{job_id}").json()["State"] for job_id in pending} == {"Paused"}
        resumed = _act(service, "resume", {"status": "Paused", "type": "Archive"})
        assert resumed["Done"] == 9
        assert {lb.get(f"/jobs/{job_id}").json()["State"] for job_id in pending} == {"Pending"}
    finally:
        silent.close()  # the blockers fail, the archives run
    for job_id in blockers:
        wait_job_state(lb, job_id, {"Failure"})
    for job_id in pending:
        wait_job_state(lb, job_id, {"Success"}, timeout=60)

    # The blockers failed: resubmitted on their own servers (and failing again: the modality is gone).
    resubmitted = _act(service, "resubmit", {"ids": sorted(blockers)})
    assert resubmitted["Done"] == 3 and {r["Result"] for r in resubmitted["Results"]} == {"done"}

    # Delete exists from Orthanc 1.12.2: done there, refused with the reason on 1.10.
    planned = _act(service, "delete", {"ids": sorted(pending)}, dry_run=True)
    if orthanc_version == "1.10":
        assert planned["Accepted"] == 0 and "1.12.2" in planned["RefusedJobs"][0]["Reason"]
    else:
        deleted = _act(service, "delete", {"ids": sorted(pending)})
        assert deleted["Done"] == 9
        for job_id in pending:
            assert lb.get(f"/jobs/{job_id}").status_code == 404


def test_where_time_goes_is_measured_on_real_jobs(
    lb: httpx.Client, service: httpx.Client, metrics: str
) -> None:
    study, _ = create_study(lb, "TIMES")
    jobs = [create_async_job(lb, "archive", study) for _ in range(3)]
    for job_id in jobs:
        wait_job_state(lb, job_id, {"Success"}, timeout=60)
    assert _metric(metrics, "orthanc_jobs_run_seconds_count", 'type="Archive"') >= 3
    assert _metric(metrics, "orthanc_jobs_wait_seconds_count", 'type="Archive"') >= 3
    assert _metric(metrics, "orthanc_jobs_finished_total", 'type="Archive"', 'state="Success"') >= 3
    durations = service.get("/orthanc-jobs/stats/durations", params={"window": 3600}).json()
    archive = durations["Types"]["Archive"]
    # A small archive runs in less time than Orthanc's EffectiveRuntime shows (0.0 on 1.12).
    assert archive["Count"] >= 3 and 0 <= archive["Run"]["P50"] <= archive["Run"]["Max"] < 60
    created = service.get("/orthanc-jobs/stats/jobs", params={"bucket": 600, "window": 3600}).json()
    assert sum(period["States"].get("Success", {}).get("Archive", 0) for period in created["Periods"]) >= 3
    wait_for(
        lambda: _metric_value(metrics, "orthanc_jobs_oldest_pending_age_seconds") == 0,
        30,
        0.2,
        "none pending",
    )
    blocker = create_async_job(lb, "archive", study)  # pending a moment at most: an age, then none
    wait_job_state(lb, blocker, {"Success"}, timeout=60)

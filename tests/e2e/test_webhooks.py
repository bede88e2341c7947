"""Alerts by webhook on the real cluster: an HTTP receiver started by the test gets signed alerts for a job
that fails on Orthanc, a job that stays Running without progress, and a server killed; a receiver that
answers 500 gets them once it recovers, and the failed attempts show in /metrics and in
``GET /orthanc-jobs/webhooks`` through nginx; a filter by type keeps other types away.

This module runs its own cluster: stuck after 3 s, not responding after 2 s, stopped after 6 s.
"""

import os
import signal
from collections.abc import Iterator

import httpx
import orjson
import pytest
from playwright.sync_api import Page, expect

from orthanc_jobs.cluster.launcher import DEMO_USER, ClusterState
from tests.e2e.conftest import ORTHANC_CONFIG, running_cluster
from tests.e2e.helpers import (
    SilentModality,
    create_study,
    direct,
    free_port,
    pid_of,
    wait_for,
    wait_job_state,
)
from tests.e2e.receiver import Receiver
from tests.e2e.test_dashboard import browser, context, page, screenshot  # noqa: F401  # fixtures

pytestmark = pytest.mark.e2e

SECRET = "e2e-webhook-secret-0123456789"
# Each webhook's path on the receiver: "all" answers 500 to its first two requests, then 200.
FLAKY_ANSWERS = 2


@pytest.fixture(scope="module")
def receiver(orthanc_version: str) -> Iterator[Receiver]:
    """A receiver of its own for each Orthanc version's cluster."""
    found = Receiver(SECRET, refusals={"/all": FLAKY_ANSWERS})
    yield found
    found.close()


@pytest.fixture(scope="module")
def alerted(orthanc_version: str, receiver: Receiver) -> Iterator[ClusterState]:
    webhooks = [
        {"Name": "all", "Url": f"{receiver.url}/all", "Secret": SECRET},
        {
            "Name": "stores",
            "Url": f"{receiver.url}/stores",
            "Secret": SECRET,
            "Events": ["job-failure", "job-stuck"],
            "Types": ["dicommodalitystore"],
        },
        {"Name": "archives", "Url": f"{receiver.url}/archives", "Secret": SECRET, "Types": ["Archive"]},
    ]
    settings = {
        "webhooks": orjson.dumps(webhooks).decode(),
        "stuck_after": "3",
        "not_responding_after": "2",
        "stopped_after": "6",
        "resync_interval": "5",
    }
    with running_cluster("webhooks", orthanc_version, ORTHANC_CONFIG, settings) as state:
        yield state


@pytest.fixture(scope="module")
def lb(alerted: ClusterState) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=alerted.orthanc_lb_url, auth=DEMO_USER, timeout=30) as client:
        yield client


def test_a_job_that_fails_is_alerted_signed_after_the_receiver_recovers(
    alerted: ClusterState, lb: httpx.Client, receiver: Receiver
) -> None:
    with direct(alerted, "orthanc-1") as orthanc:
        study, _ = create_study(orthanc, "HOOKFAIL")
        closed = {"AET": "NOBODY", "Host": "127.0.0.1", "Port": free_port()}  # nothing listens there
        assert orthanc.put("/modalities/nobody", json=closed).status_code == 200
        answer = orthanc.post("/modalities/nobody/store", json={"Resources": [study], "Asynchronous": True})
        assert answer.status_code == 200, answer.text
        job_id = answer.json()["ID"]
    assert wait_job_state(lb, job_id, {"Success", "Failure"})["State"] == "Failure"
    # "all" refuses the first two attempts: delivered on the third (after about 1 s and 2 s).
    [alert] = wait_for(
        lambda: receiver.about_job("/all", "job-failure", job_id), timeout=20, what="the alert"
    )
    assert alert["Job"]["Type"] == "DicomModalityStore" and alert["Job"]["State"] == "Failure"
    assert alert["Job"]["Server"]["Name"] == "orthanc-1" and alert["Service"]
    wait_for(
        lambda: receiver.about_job("/stores", "job-failure", job_id), timeout=10, what="the stores' alert"
    )

    def attempts() -> list[bytes]:
        return [body for path, _, body in receiver.received if path == "/all" and job_id.encode() in body]

    wait_for(lambda: len(attempts()) > FLAKY_ANSWERS, timeout=20, what="the attempts after the refusals")
    assert len(attempts()) == FLAKY_ANSWERS + 1 and len(set(attempts())) == 1  # the same body each time


def test_a_stuck_job_is_alerted_once_then_its_failure(
    alerted: ClusterState, lb: httpx.Client, receiver: Receiver
) -> None:
    modality = SilentModality()
    try:
        with direct(alerted, "orthanc-2") as orthanc:
            study, _ = create_study(orthanc, "HOOKSTUCK")
            job_id = modality.store(orthanc, study)
        wait_job_state(lb, job_id, {"Running"})
        for path in ("/all", "/stores"):
            [stuck] = wait_for(
                lambda path=path: receiver.about_job(path, "job-stuck", job_id), timeout=15, what="stuck"
            )
            assert stuck["Job"]["Server"]["Stuck"] is True and stuck["Job"]["State"] == "Running"
    finally:
        modality.close()  # the C-STORE fails
    assert wait_job_state(lb, job_id, {"Success", "Failure"})["State"] == "Failure"
    wait_for(lambda: receiver.about_job("/stores", "job-failure", job_id), timeout=15, what="its failure")
    wait_for(lambda: receiver.about_job("/all", "job-failure", job_id), timeout=15, what="its failure")
    assert len(receiver.about_job("/all", "job-stuck", job_id)) == 1  # once, stuck and then failed
    # Archives only: a DicomModalityStore's failure or stall is not theirs.
    assert receiver.alerts("/archives") == []


def test_a_killed_server_is_alerted_not_responding_then_stopped(
    alerted: ClusterState, lb: httpx.Client, receiver: Receiver
) -> None:
    os.kill(pid_of(alerted, "orthanc-3"), signal.SIGKILL)

    def told() -> list[str]:
        return [
            a["Event"]
            for a in receiver.alerts("/all")
            if a["Event"].startswith("server-") and a["Server"]["Name"] == "orthanc-3"
        ]

    wait_for(lambda: len(told()) >= 2, timeout=20, what="orthanc-3 not responding, then stopped")
    assert told() == ["server-not-responding", "server-stopped"]
    stopped = next(a for a in receiver.alerts("/all") if a["Event"] == "server-stopped")
    assert (
        stopped["Server"]["Status"] == "stopped"
        and stopped["Server"]["Url"] == alerted.orthanc_urls["orthanc-3"]
    )
    # Server events go only to the webhooks that ask for them, whatever their types.
    assert [a for a in receiver.alerts("/stores") if a["Event"].startswith("server-")] == []
    assert len([a for a in receiver.alerts("/archives") if a["Event"].startswith("server-")]) == 2


def test_failed_attempts_show_in_the_metrics_and_the_route(alerted: ClusterState, receiver: Receiver) -> None:
    metrics = httpx.get(f"{alerted.service_url}/metrics").text
    assert f'orthanc_jobs_webhook_attempt_failures_total{{webhook="all"}} {FLAKY_ANSWERS}.0' in metrics
    assert 'orthanc_jobs_webhook_deliveries_total{result="failed",webhook="all"} 0.0' in metrics
    assert 'orthanc_jobs_webhook_queue{webhook="all"} 0.0' in metrics
    route = f"{alerted.lb_url}/orthanc-jobs/webhooks"
    assert httpx.get(route).status_code == 401
    answer = httpx.get(route, auth=DEMO_USER)
    assert answer.status_code == 200 and SECRET not in answer.text
    hooks = {hook["Name"]: hook for hook in answer.json()}
    everything = hooks["all"]
    assert everything["Delivered"] == len(receiver.alerts("/all")) >= 5
    assert (everything["Failed"], everything["AttemptFailures"], everything["Queued"]) == (
        0,
        FLAKY_ANSWERS,
        0,
    )
    assert everything["LastError"] == "HTTP 500 Internal Server Error" and everything["LastFailureAt"]
    assert hooks["stores"]["Delivered"] == 3 and hooks["stores"]["Types"] == ["dicommodalitystore"]
    delivered = everything["Delivered"]
    assert (
        f'orthanc_jobs_webhook_deliveries_total{{result="delivered",webhook="all"}} {delivered}.0' in metrics
    )


def test_the_dashboard_shows_the_deliveries(alerted: ClusterState, page: Page) -> None:  # noqa: F811
    answer = page.goto(f"{alerted.lb_url}/orthanc-jobs/ui/")
    assert answer is not None and answer.status == 200
    panel = page.locator("#webhooks-panel")
    expect(panel).to_be_visible()
    everything = page.locator('#webhooks-body tr[data-webhook="all"]')
    expect(everything).to_contain_text("HTTP 500 Internal Server Error")
    expect(page.locator('#webhooks-body tr[data-webhook="stores"]')).to_contain_text(
        "types: dicommodalitystore"
    )
    expect(page.locator("#webhooks-body tr")).to_have_count(3)
    screenshot(page, "dashboard-webhooks", full_page=True)

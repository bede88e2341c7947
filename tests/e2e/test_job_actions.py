"""pause, resume, cancel and resubmit through the load balancer, with the new state visible at once."""

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.e2e.helpers import SilentModality, create_async_job, create_study, free_port, wait_job_state

pytestmark = pytest.mark.e2e

SERVER = "orthanc-1"


@contextmanager
def blocked(client: httpx.Client, study: str) -> Iterator[None]:
    """The server busy with a C-STORE that never ends (ConcurrentJobs is 1): its next jobs stay Pending."""
    modality = SilentModality()
    blocker = modality.store(client, study)
    try:
        wait_job_state(client, blocker, {"Running"})
        yield
    finally:
        modality.close()  # the association breaks: the blocker fails and the queue drains
        wait_job_state(client, blocker, {"Success", "Failure"}, timeout=60)


def test_pause_resume_cancel_a_pending_job(lb: httpx.Client, servers: dict[str, httpx.Client]) -> None:
    direct = servers[SERVER]
    study, _ = create_study(direct, "ACTIONS")
    with blocked(direct, study):
        job_id = create_async_job(direct, "archive", study)
        job = lb.get(f"/jobs/{job_id}").json()
        assert (job["State"], job["Server"]["Name"]) == ("Pending", SERVER)

        # Orthanc emits no event for these: the state must be visible right after the action.
        assert lb.post(f"/jobs/{job_id}/pause").json() == {}
        assert lb.get(f"/jobs/{job_id}").json()["State"] == "Paused"
        assert direct.get(f"/jobs/{job_id}").json()["State"] == "Paused"

        assert lb.post(f"/jobs/{job_id}/resume").json() == {}
        assert lb.get(f"/jobs/{job_id}").json()["State"] == "Pending"
        assert direct.get(f"/jobs/{job_id}").json()["State"] == "Pending"

        refused = lb.post(f"/jobs/{job_id}/resume")  # not Paused: Orthanc refuses, and so do we
        assert refused.status_code == 400
        assert refused.json()["HttpStatus"] == 400

        assert lb.post(f"/jobs/{job_id}/cancel").json() == {}
        cancelled = lb.get(f"/jobs/{job_id}").json()
        assert (cancelled["State"], cancelled["ErrorCode"]) == ("Failure", 37)  # 37: Orthanc's "canceled job"
        assert direct.get(f"/jobs/{job_id}").json()["State"] == "Failure"
        listed_failures = lb.get("/jobs", params={"status": "Failure"}).json()
        assert job_id in listed_failures


def test_resubmit_a_failed_job(lb: httpx.Client, servers: dict[str, httpx.Client]) -> None:
    direct = servers[SERVER]
    study, _ = create_study(direct, "RESUBMIT")
    nobody = {"AET": "NOBODY", "Host": "127.0.0.1", "Port": free_port()}  # nothing listens: fails at once
    assert direct.put("/modalities/nobody", json=nobody).status_code == 200
    job_id = direct.post(
        "/modalities/nobody/store", json={"Resources": [study], "Asynchronous": True}
    ).json()["ID"]
    failed = wait_job_state(lb, job_id, {"Success", "Failure"})
    assert failed["State"] == "Failure"

    refused = lb.post(f"/jobs/{job_id}/resume")  # a failed job cannot be resumed
    assert refused.status_code == 400

    with blocked(direct, study):
        assert lb.post(f"/jobs/{job_id}/resubmit").json() == {}
        assert lb.get(f"/jobs/{job_id}").json()["State"] == "Pending"
        assert direct.get(f"/jobs/{job_id}").json()["State"] == "Pending"
    assert wait_job_state(lb, job_id, {"Success", "Failure"})["State"] == "Failure"


def test_actions_reach_the_owner_whichever_server_answers(
    lb: httpx.Client, servers: dict[str, httpx.Client]
) -> None:
    """A finished job, created through the load balancer: pause and cancel are no-ops, as on one Orthanc."""
    study, _ = create_study(lb, "NOOP")
    for _ in range(6):
        job_id = create_async_job(lb, "archive", study)
        wait_job_state(lb, job_id, {"Success"})
        assert lb.post(f"/jobs/{job_id}/pause").json() == {}
        assert lb.post(f"/jobs/{job_id}/cancel").json() == {}
        assert lb.post(f"/jobs/{job_id}/resubmit").status_code == 400  # only a failed job can be resubmitted
        assert lb.get(f"/jobs/{job_id}").json()["State"] == "Success"

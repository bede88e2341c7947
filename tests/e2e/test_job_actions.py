"""pause, resume, cancel and resubmit through the load balancer, with the new state visible at once."""

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from orthanc_jobs.cluster.launcher import ClusterState
from tests.e2e.helpers import (
    SilentModality,
    create_async_job,
    create_study,
    free_port,
    listening,
    wait_event,
    wait_job_state,
)

pytestmark = pytest.mark.e2e

SERVER = "orthanc-1"


@contextmanager
def blocked(client: httpx.Client, study: str) -> Iterator[str]:
    """The server busy with a C-STORE that never ends (ConcurrentJobs is 1): its next jobs stay Pending.
    Yields the C-STORE's job."""
    modality = SilentModality()
    blocker = modality.store(client, study)
    try:
        wait_job_state(client, blocker, {"Running"})
        yield blocker
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


def test_deleting_a_job_and_its_archive_follows_everywhere(
    cluster: ClusterState, lb: httpx.Client, servers: dict[str, httpx.Client], orthanc_version: str
) -> None:
    """Orthanc >= 1.12.1 deletes a job's output, >= 1.12.2 a finished job: through the load balancer, on the
    owner; the job-service forgets the job (listing, history, event stream) only when its owner did."""
    if orthanc_version == "1.10":
        pytest.skip("Orthanc 1.10 has no DELETE on jobs (see test_orthanc_1_10_refuses_deletes)")
    direct = servers[SERVER]
    study, _ = create_study(direct, "DELETE")
    with blocked(direct, study) as running:
        pending = create_async_job(direct, "archive", study)
        # Orthanc tells no event when a job starts: the service sees it Running at its next poll.
        wait_job_state(lb, running, {"Running"})
        # Orthanc deletes finished jobs only; of the others it says 404 (7, "inexistent item"): they stay.
        for job_id, state in ((running, "Running"), (pending, "Pending")):
            refused = lb.delete(f"/jobs/{job_id}")
            assert (refused.status_code, refused.json()["OrthancStatus"]) == (404, 7), refused.text
            assert lb.get(f"/jobs/{job_id}").json()["State"] == state
            assert direct.get(f"/jobs/{job_id}").status_code == 200
    wait_job_state(lb, pending, {"Success"}, timeout=60)
    assert lb.get(f"/jobs/{pending}/archive").status_code == 200

    with listening(cluster) as events:
        assert events.get(timeout=10)["status"] == 200
        deleted_output = lb.delete(f"/jobs/{pending}/archive")
        assert (deleted_output.status_code, deleted_output.content) == (200, b"")  # Orthanc's own answer
        assert lb.get(f"/jobs/{pending}/archive").status_code == 404  # gone on its owner
        assert lb.delete(f"/jobs/{pending}/archive").status_code == 404
        assert lb.get(f"/jobs/{pending}").json()["State"] == "Success"  # the job itself stays

        deleted = lb.delete(f"/jobs/{pending}")
        assert (deleted.status_code, deleted.content) == (200, b"")
        wait_event(events, lambda e: e["event"] == "removed" and e["data"] == {"ID": pending})
    assert direct.get(f"/jobs/{pending}").status_code == 404
    assert lb.get(f"/jobs/{pending}").status_code == 404
    assert pending not in lb.get("/jobs").json()
    assert pending not in {job["ID"] for job in lb.get("/jobs", params={"expand": ""}).json()}
    assert lb.delete(f"/jobs/{pending}").status_code == 404
    assert lb.get(f"/jobs/{running}").json()["State"] in {"Success", "Failure"}  # the others untouched


def test_orthanc_1_10_refuses_deletes(
    lb: httpx.Client, servers: dict[str, httpx.Client], orthanc_version: str
) -> None:
    """On Orthanc 1.10 the owner's refusal is the answer, as from one Orthanc, and the job stays whole."""
    if orthanc_version != "1.10":
        pytest.skip(
            "Orthanc >= 1.12.2 deletes jobs (see test_deleting_a_job_and_its_archive_follows_everywhere)"
        )
    direct = servers[SERVER]
    study, _ = create_study(direct, "NO-DELETE")
    job_id = create_async_job(direct, "archive", study)
    wait_job_state(lb, job_id, {"Success"}, timeout=60)
    for path in (f"/jobs/{job_id}/archive", f"/jobs/{job_id}"):
        through_lb, owner = lb.delete(path), direct.delete(path)
        assert through_lb.status_code == owner.status_code == 405, through_lb.text
        assert through_lb.headers.get("allow") == owner.headers.get("allow")
    assert lb.get(f"/jobs/{job_id}").json()["State"] == "Success"
    assert job_id in lb.get("/jobs").json()
    assert lb.get(f"/jobs/{job_id}/archive").status_code == 200

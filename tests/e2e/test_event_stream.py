"""The event stream through the load balancer: live changes, and resuming with Last-Event-ID."""

import httpx
import pytest

from orthanc_jobs.cluster.launcher import ClusterState
from tests.e2e.helpers import create_async_job, create_study, listening, wait_event

pytestmark = pytest.mark.e2e


def test_changes_arrive_live_and_a_reconnection_resumes(cluster: ClusterState, lb: httpx.Client) -> None:
    study, _ = create_study(lb, "EVENTS")
    with listening(cluster) as received:
        assert received.get(timeout=10) == {"status": 200, "type": "text/event-stream; charset=utf-8"}
        job_id = create_async_job(lb, "archive", study)
        done = wait_event(
            received,
            lambda e: e["event"] == "job" and e["data"]["ID"] == job_id and e["data"]["State"] == "Success",
        )
        assert done["data"]["Server"]["Status"] == "alive"
        last_id = int(done["id"])

    missed = [create_async_job(lb, "archive", study) for _ in range(3)]  # while nobody listens
    with listening(cluster, {"Last-Event-ID": str(last_id)}) as received:
        assert received.get(timeout=10)["status"] == 200
        seen: set[str] = set()
        while not set(missed) <= seen:
            event = wait_event(received, lambda e: e["event"] == "job")
            assert int(event["id"]) > last_id
            seen.add(event["data"]["ID"])


def test_the_stream_needs_credentials(cluster: ClusterState) -> None:
    answer = httpx.get(f"{cluster.lb_url}/orthanc-jobs/events", auth=("demo", "wrong"))
    assert answer.status_code == 401

"""The event stream through the load balancer: live changes, and resuming with Last-Event-ID."""

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import orjson
import pytest

from orthanc_jobs.cluster.launcher import DEMO_USER, ClusterState
from tests.e2e.helpers import create_async_job, create_study

pytestmark = pytest.mark.e2e


@contextmanager
def listening(cluster: ClusterState, headers: dict[str, str] | None = None) -> Iterator["queue.Queue[dict]"]:
    """Read the stream on a thread; each event arrives as {"id", "event", "data"}."""
    received: queue.Queue[dict] = queue.Queue()
    client = httpx.Client(auth=DEMO_USER, timeout=httpx.Timeout(30, read=60))
    stop = threading.Event()

    def read() -> None:
        try:
            stream(received)
        except Exception:
            if not stop.is_set():  # closing the client at the end ends the read: expected
                raise

    def stream(received: "queue.Queue[dict]") -> None:
        with client.stream("GET", f"{cluster.lb_url}/orthanc-jobs/events", headers=headers or {}) as answer:
            received.put({"status": answer.status_code, "type": answer.headers.get("content-type")})
            event: dict = {}
            for line in answer.iter_lines():
                if stop.is_set():
                    return
                if not line:
                    if "event" in event:
                        received.put(event)
                    event = {}
                elif not line.startswith(":"):
                    field, _, value = line.partition(": ")
                    event[field] = orjson.loads(value) if field == "data" else value

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield received
    finally:
        stop.set()
        client.close()


def wait_event(received: "queue.Queue[dict]", predicate, timeout: float = 10) -> dict:  # type: ignore[no-untyped-def]
    while True:
        event = received.get(timeout=timeout)
        if predicate(event):
            return event


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

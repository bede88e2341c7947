"""A password revoked on the Orthanc servers: refused by the job-service within the cache period, the same
answer whichever server is asked, and the event streams opened with it closed."""

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from orthanc_jobs.cluster.launcher import DEMO_USER, ClusterState
from tests.e2e.conftest import running_cluster
from tests.e2e.helpers import cli, create_async_job, create_study, direct, wait_for

pytestmark = pytest.mark.e2e

ALICE = ("alice", "alice-password")
CACHE_SECONDS = 2.0
# Beyond the cache period: one round of questions to the servers, and the way back through nginx.
MARGIN = 1.5


@pytest.fixture(scope="module")
def revocable(orthanc_version: str) -> Iterator[ClusterState]:
    """Every Orthanc accepts Alice as well as the demo user (the launcher merges RegisteredUsers)."""
    orthanc_config = {"RegisteredUsers": json.dumps({ALICE[0]: ALICE[1]})}
    settings = {"auth_cache_seconds": str(CACHE_SECONDS)}
    with running_cluster("revoked", orthanc_version, orthanc_config, settings) as state:
        yield state


class Stream:
    """The event stream read on a thread, as Alice: the job ids it told, and when it ended."""

    def __init__(self, cluster: ClusterState) -> None:
        self.status: int | None = None
        self.job_ids: set[str] = set()
        self.ended_at: float | None = None
        self._client = httpx.Client(auth=ALICE, timeout=httpx.Timeout(30, read=60))
        self._url = f"{cluster.lb_url}/orthanc-jobs/events"
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with self._client.stream("GET", self._url) as answer:
            self.status = answer.status_code
            kind = ""
            for line in answer.iter_lines():
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: ") and kind == "job":
                    self.job_ids.add(json.loads(line.removeprefix("data: "))["ID"])
        self.ended_at = time.monotonic()

    def close(self) -> None:
        self._client.close()
        self._thread.join(5)


def revoke_alice(cluster: ClusterState, name: str) -> float:
    """Rewrite the server's configuration without Alice and restart it; when it first refused her."""
    path = Path(cluster.directory) / name / "orthanc.json"
    configuration = json.loads(path.read_text())
    del configuration["RegisteredUsers"][ALICE[0]]
    path.write_text(json.dumps(configuration, indent=2))
    refused_at: list[float] = []
    restarted = threading.Event()

    def watch() -> None:
        with direct(cluster, name) as server:
            while not restarted.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    if server.get("/system", auth=ALICE, timeout=1).status_code == 401:
                        refused_at.append(time.monotonic())
                        return
                time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    cli(cluster, "restart", name)
    watcher.join(5)
    restarted.set()
    assert refused_at, f"{name} did not refuse Alice after its restart"
    return refused_at[0]


def alice_answers(cluster: ClusterState, count: int) -> list[int]:
    with httpx.Client(base_url=cluster.orthanc_lb_url, auth=ALICE, timeout=30) as client:
        return [client.get("/jobs").status_code for _ in range(count)]


def test_a_revoked_password_is_refused_and_its_streams_closed(revocable: ClusterState) -> None:
    cluster = revocable
    with httpx.Client(base_url=cluster.orthanc_lb_url, auth=DEMO_USER, timeout=30) as lb:
        study, _ = create_study(lb, "REVOKED")
        stream = Stream(cluster)
        try:
            wait_for(lambda: stream.status is not None, timeout=10, what="the stream's answer")
            assert stream.status == 200
            job_id = create_async_job(lb, "archive", study)
            wait_for(lambda: job_id in stream.job_ids, timeout=10, what="the job in Alice's stream")
            assert alice_answers(cluster, 3) == [200] * 3

            assert stream.ended_at is None  # open until a server refuses her
            # orthanc-1 no longer knows Alice; orthanc-2 and orthanc-3 still accept her.
            revoked_at = revoke_alice(cluster, "orthanc-1")
            with direct(cluster, "orthanc-1") as first, direct(cluster, "orthanc-2") as second:
                assert first.get("/system", auth=ALICE).status_code == 401
                assert second.get("/system", auth=ALICE).status_code == 200
            wait_for(lambda: stream.ended_at, timeout=CACHE_SECONDS + MARGIN + 5, what="the stream's end")
            assert stream.ended_at is not None
            closed_after = stream.ended_at - revoked_at
            print(f"\nAlice's stream closed {closed_after:.2f} s after orthanc-1 refused her")
            # Not before the refusal (within the 20 ms the watcher polls at), and within the cache period.
            assert -0.1 <= closed_after <= CACHE_SECONDS + MARGIN
            # The servers disagree: the same answer every time, a refusal.
            assert alice_answers(cluster, 20) == [401] * 20
        finally:
            stream.close()

        for name in ("orthanc-2", "orthanc-3"):
            revoke_alice(cluster, name)
        assert alice_answers(cluster, 5) == [401] * 5
        refused = httpx.get(f"{cluster.lb_url}/orthanc-jobs/events", auth=ALICE, timeout=10)
        assert refused.status_code == 401
        assert lb.get("/jobs").status_code == 200  # the demo user was never revoked

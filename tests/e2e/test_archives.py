"""MediaArchiveSize in a cluster (issue #16, point 3): each server keeps the outputs of its own newest
asynchronous archives, as many as its MediaArchiveSize. The chosen behaviour, kept: an archive survives a
newer archive made on another server (one Orthanc with MediaArchiveSize 1 would have dropped it), and goes
when its own server makes a newer one, answering 404 as that server says."""

from collections.abc import Iterator

import httpx
import pytest

from orthanc_jobs.cluster.launcher import DEMO_USER, ClusterState
from tests.e2e.conftest import running_cluster
from tests.e2e.helpers import create_async_job, create_study, wait_job_state

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def one_archive_each(orthanc_version: str) -> Iterator[ClusterState]:
    with running_cluster("archives", orthanc_version, {"MediaArchiveSize": "1"}, instances=2) as state:
        yield state


def test_each_server_keeps_its_own_newest_archives(one_archive_each: ClusterState) -> None:
    cluster = one_archive_each
    with (
        httpx.Client(base_url=cluster.orthanc_lb_url, auth=DEMO_USER, timeout=30) as lb,
        httpx.Client(base_url=f"{cluster.lb_url}/orthanc-1", auth=DEMO_USER, timeout=30) as first,
        httpx.Client(base_url=f"{cluster.lb_url}/orthanc-2", auth=DEMO_USER, timeout=30) as second,
    ):
        study, _ = create_study(first, "ARCHIVES")

        def archive(server: httpx.Client) -> str:
            job_id = create_async_job(server, "archive", study)
            wait_job_state(lb, job_id, {"Success"})
            return job_id

        oldest = archive(first)
        assert lb.get(f"/jobs/{oldest}/archive").content[:2] == b"PK"
        archive(second)  # newer, on the other server
        assert lb.get(f"/jobs/{oldest}/archive").status_code == 200  # kept: its server made no newer one
        newest = archive(first)  # newer, on its own server
        dropped = lb.get(f"/jobs/{oldest}/archive")
        assert dropped.status_code == 404 and dropped.json()["HttpStatus"] == 404
        assert first.get(f"/jobs/{oldest}/archive").status_code == 404  # as its server says
        assert lb.get(f"/jobs/{oldest}").json()["State"] == "Success"  # the job itself stays listed
        assert lb.get(f"/jobs/{newest}/archive").content[:2] == b"PK"

"""The job-service's history on the cluster's PostgreSQL (``--service-database postgresql``): what it
acknowledges is there, and survives a restart of the service, as with SQLite."""

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from orthanc_jobs.cluster.launcher import DEMO_USER, ClusterState
from tests.e2e.conftest import ORTHANC_CONFIG, running_cluster
from tests.e2e.helpers import cli, create_async_job, create_study, pid_of, wait_for, wait_job_state

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(orthanc_version: str) -> Iterator[ClusterState]:
    database = "postgresql"
    with running_cluster("postgresql", orthanc_version, ORTHANC_CONFIG, service_database=database) as state:
        yield state


def database_url(cluster: ClusterState) -> str:
    for process in ClusterState.load(Path(cluster.directory)).processes:
        if process.role == "job-service":
            return process.env["ORTHANC_JOBS_DATABASE"]
    raise AssertionError("no job-service in the cluster")


def test_the_history_is_in_postgresql_and_survives_a_restart_of_the_service(cluster: ClusterState) -> None:
    url = database_url(cluster)
    assert url.startswith("postgresql://127.0.0.1") or url.startswith("postgresql://postgres@127.0.0.1")
    assert not (Path(cluster.directory) / "job-service.sqlite3").exists()
    with httpx.Client(base_url=cluster.orthanc_lb_url, auth=DEMO_USER, timeout=30) as lb:
        study, _ = create_study(lb, "POSTGRESQL")
        job_id = create_async_job(lb, "archive", study)
        wait_job_state(lb, job_id, {"Success"})

        def stored() -> bool:
            with psycopg.connect(url) as db:
                row = db.execute("SELECT content FROM orthanc_jobs.jobs WHERE id = %s", (job_id,)).fetchone()
            return row is not None and b'"State":"Success"' in bytes(row[0])

        wait_for(stored, timeout=10, what="the job's end state in PostgreSQL")
        with psycopg.connect(url) as db:
            servers = db.execute("SELECT name FROM orthanc_jobs.servers ORDER BY name").fetchall()
            migrations = db.execute("SELECT version FROM orthanc_jobs.migrations").fetchall()
        assert [name for (name,) in servers] == ["orthanc-1", "orthanc-2", "orthanc-3"]
        assert migrations == [(1,), (2,)]

        before = pid_of(cluster, "job-service")
        cli(cluster, "restart", "job-service")
        assert pid_of(cluster, "job-service") != before
        answer = lb.get(f"/jobs/{job_id}")
        assert answer.status_code == 200 and answer.json()["State"] == "Success"
        assert job_id in lb.get("/jobs").json()


def test_postgresql_away_reads_go_on_and_nothing_is_lost(cluster: ClusterState) -> None:
    """PostgreSQL stopped for 10 s: the service answers from memory, says it is not ready (its history cannot
    be written, plugin events are refused 503 and kept by the plugins), and catches up when it is back."""
    url = database_url(cluster)
    with httpx.Client(base_url=cluster.orthanc_lb_url, auth=DEMO_USER, timeout=30) as lb:
        study, _ = create_study(lb, "POSTGRESQL-AWAY")
        before = create_async_job(lb, "archive", study)
        wait_job_state(lb, before, {"Success"})
        cli(cluster, "stop", "postgresql")
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                assert lb.get(f"/jobs/{before}").status_code == 200
                assert before in lb.get("/jobs").json()
                time.sleep(0.5)
            assert httpx.get(f"{cluster.service_url}/readyz", timeout=10).status_code == 503
        finally:
            cli(cluster, "start", "postgresql")
        wait_for(
            lambda: httpx.get(f"{cluster.service_url}/readyz", timeout=10).status_code == 200,
            timeout=30,
            what="ready again",
        )

        def archive_created() -> str | None:
            # Orthanc 1.12.7's PostgreSQL plugin (5.0) answers 503 "database not available (probably a
            # transient situation)" for a moment after PostgreSQL is back, where 1.10.1's (4.0) does not.
            try:
                return create_async_job(lb, "archive", study)
            except AssertionError as refused:
                assert '"HttpStatus" : 503' in str(refused)
                return None

        after = wait_for(archive_created, timeout=15, interval=0.2, what="Orthanc's own database back")
        wait_job_state(lb, after, {"Success"})

        def stored(job_id: str) -> bool:
            with psycopg.connect(url) as db:
                return (
                    db.execute("SELECT 1 FROM orthanc_jobs.jobs WHERE id = %s", (job_id,)).fetchone()
                    is not None
                )

        wait_for(lambda: stored(before) and stored(after), timeout=15, what="both jobs in PostgreSQL")
        servers = lb.get(f"{cluster.lb_url}/orthanc-jobs/servers").json()
        assert {s["Name"]: s["Status"] for s in servers} == dict.fromkeys(cluster.orthanc_urls, "alive")

"""The command line (list, show, actions, download, servers, watch) as a user runs it, against the real
cluster: each test runs ``python -m orthanc_jobs ...`` and checks what it prints against the API."""

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from orthanc_jobs.cluster.launcher import ClusterState
from tests.e2e.helpers import create_async_job, create_study, free_port, wait_job_state
from tests.e2e.test_job_actions import blocked

pytestmark = pytest.mark.e2e

SERVER = "orthanc-1"
# Nothing of the caller's environment: the connection comes from the command line only.
ENV = {key: value for key, value in os.environ.items() if not key.startswith("ORTHANC_JOBS_CLI_")}
ENV["COLUMNS"] = "200"  # whole job ids in tables


def command(cluster: ClusterState, *args: str, password: str = "demo", url: str | None = None) -> list[str]:
    connection = ["--url", url or cluster.lb_url, "--user", "demo", "--password", password]
    return [sys.executable, "-m", "orthanc_jobs", *args, *connection]


def cli(
    cluster: ClusterState, *args: str, password: str = "demo", url: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(cluster, *args, password=password, url=url),
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit code {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def assert_error(result: subprocess.CompletedProcess[str], code: int, message: str) -> None:
    """A failure is one line on stderr, nothing on stdout, and the documented exit code."""
    assert result.returncode == code, f"exit code {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.fixture(scope="module")
def finished(lb: httpx.Client, servers: dict[str, httpx.Client]) -> dict[str, str]:
    """A successful archive (through the load balancer) and a failed transfer."""
    study, _ = create_study(lb, "CLI")
    archive = create_async_job(lb, "archive", study)
    wait_job_state(lb, archive, {"Success"})
    direct = servers[SERVER]
    nobody = {"AET": "NOBODY", "Host": "127.0.0.1", "Port": free_port()}  # nothing listens: fails at once
    assert direct.put("/modalities/nobody", json=nobody).status_code == 200
    store = direct.post("/modalities/nobody/store", json={"Resources": [study], "Asynchronous": True})
    assert store.status_code == 200, store.text
    failure = str(store.json()["ID"])
    assert wait_job_state(lb, failure, {"Success", "Failure"})["State"] == "Failure"
    return {"archive": archive, "failure": failure}


def test_list_json_is_the_api_s_listing(cluster: ClusterState, lb: httpx.Client, finished: dict) -> None:
    listed = json.loads(ok(cli(cluster, "list", "--json", "--status", "Success,Failure", "--limit", "1000")))
    expected = lb.get("/jobs", params={"expand": "", "status": "Success,Failure", "limit": 1000}).json()
    assert listed == expected
    assert {finished["archive"], finished["failure"]} <= {job["ID"] for job in listed}

    page = json.loads(ok(cli(cluster, "list", "--json", "--limit", "1", "--offset", "1")))
    assert page == lb.get("/jobs", params={"expand": "", "limit": 1, "offset": 1}).json()


def test_list_filters_by_state(cluster: ClusterState, lb: httpx.Client, finished: dict) -> None:
    out = ok(cli(cluster, "list", "--status", "Success", "--limit", "1000"))
    rows = [line for line in out.splitlines() if line.strip() and line.split()[0].count("-") == 4]
    assert rows, out
    assert all(" Success " in row for row in rows), out
    assert finished["archive"] in out
    assert finished["failure"] not in out
    total = lb.get("/jobs", params={"status": "Success", "limit": 0}).headers["X-Total-Count"]
    assert f"of {total}" in out.splitlines()[-1]


def test_show(cluster: ClusterState, lb: httpx.Client, finished: dict) -> None:
    job_id = finished["archive"]
    assert json.loads(ok(cli(cluster, "show", job_id, "--json"))) == lb.get(f"/jobs/{job_id}").json()

    out = ok(cli(cluster, "show", job_id))
    owner = lb.get(f"/jobs/{job_id}").json()["Server"]["Name"]
    body, summary = out.split("\n\n", 1)
    assert json.loads(body)["ID"] == job_id
    assert f"Archive {job_id}" in summary
    assert "Success, 100%" in summary
    assert owner in summary

    failed = ok(cli(cluster, "show", finished["failure"]))
    assert "Error" in failed.split("\n\n", 1)[1]


def test_pause_resume_cancel_a_pending_job(
    cluster: ClusterState, lb: httpx.Client, servers: dict[str, httpx.Client]
) -> None:
    direct = servers[SERVER]
    study, _ = create_study(direct, "CLI-ACTIONS")
    with blocked(direct, study):
        job_id = create_async_job(direct, "archive", study)
        assert lb.get(f"/jobs/{job_id}").json()["State"] == "Pending"

        assert ok(cli(cluster, "pause", job_id)).strip() == f"job {job_id}: Paused"
        assert lb.get(f"/jobs/{job_id}").json()["State"] == "Paused"

        assert ok(cli(cluster, "resume", job_id)).strip() == f"job {job_id}: Pending"
        assert lb.get(f"/jobs/{job_id}").json()["State"] == "Pending"

        # not paused: Orthanc refuses, and the command says so
        assert_error(cli(cluster, "resume", job_id), 1, f"cannot resume job {job_id}")

        assert ok(cli(cluster, "cancel", job_id)).strip() == f"job {job_id}: Failure"
        cancelled = lb.get(f"/jobs/{job_id}").json()
        assert (cancelled["State"], cancelled["ErrorCode"]) == ("Failure", 37)


def test_download_an_archive(cluster: ClusterState, finished: dict, tmp_path: Path) -> None:
    target = tmp_path / "study.zip"
    out = ok(cli(cluster, "download", finished["archive"], "-o", str(target)))
    assert f"to {target}" in out
    with zipfile.ZipFile(target) as archive:
        assert archive.testzip() is None
        assert any(name.endswith(".dcm") for name in archive.namelist()), archive.namelist()
    assert [path.name for path in tmp_path.iterdir()] == ["study.zip"]

    # a job without that output: a clear error and no file
    missing = tmp_path / "none.zip"
    result = cli(cluster, "download", finished["failure"], "-o", str(missing))
    assert_error(result, 1, f"job {finished['failure']} has no output 'archive'")
    assert not missing.exists()


def test_servers(cluster: ClusterState) -> None:
    out = ok(cli(cluster, "servers"))
    for name in ("orthanc-1", "orthanc-2", "orthanc-3"):
        assert any(line.split()[:2] == [name, "alive"] for line in out.splitlines()), out
    listed = json.loads(ok(cli(cluster, "servers", "--json")))
    assert sorted(server["Name"] for server in listed) == ["orthanc-1", "orthanc-2", "orthanc-3"]


def test_errors(cluster: ClusterState, finished: dict) -> None:
    assert_error(
        cli(cluster, "list", password="wrong"),
        4,
        "error: the cluster refused these credentials (use --user/--password or ORTHANC_JOBS_CLI_USER/",
    )
    nowhere = f"http://127.0.0.1:{free_port()}"
    assert_error(cli(cluster, "list", url=nowhere), 3, f"cannot reach the job-service at {nowhere}")
    unknown = "00000000-0000-0000-0000-000000000000"
    assert_error(cli(cluster, "show", unknown), 1, f"error: no job {unknown}")
    assert_error(cli(cluster, "pause", "not-a-job"), 1, "error: no job not-a-job")
    assert_error(cli(cluster, "show", "../system"), 1, "error: no job ../system")  # not Orthanc's /system
    assert_error(cli(cluster, "list", "--status", "Finished"), 1, "unknown job state 'Finished'")
    assert cli(cluster, "list", "--limit", "-1").returncode == 2  # typer's usage error


def test_watch_shows_a_job_created_meanwhile(cluster: ClusterState, lb: httpx.Client) -> None:
    study, _ = create_study(lb, "CLI-WATCH")
    watcher = subprocess.Popen(
        command(cluster, "watch", "--type", "Archive", "--exit-after", "60"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert watcher.stderr is not None
        ready = watcher.stderr.readline()  # once the current jobs are loaded and the stream is open
        assert "watching" in ready, ready + watcher.stderr.read()
        job_id = create_async_job(lb, "archive", study)
        wait_job_state(lb, job_id, {"Success"})
        time.sleep(1)  # the event is on its way as soon as the job-service knows
        watcher.send_signal(signal.SIGINT)  # Ctrl-C: the final table, exit code 0
        out, err = watcher.communicate(timeout=30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
    assert watcher.returncode == 0, err
    rows = [line for line in out.splitlines() if job_id in line]
    assert len(rows) == 1, out
    assert "Success" in rows[0] and "100%" in rows[0], rows[0]
    assert "Traceback" not in err


def test_watch_stops_by_itself_and_filters(cluster: ClusterState, finished: dict) -> None:
    started = time.monotonic()
    out = ok(cli(cluster, "watch", "--status", "Failure", "--limit", "1000", "--exit-after", "2"))
    assert 2 <= time.monotonic() - started < 30
    assert finished["failure"] in out
    assert finished["archive"] not in out


def test_watch_errors(cluster: ClusterState) -> None:
    assert_error(cli(cluster, "watch", "--exit-after", "5", password="wrong"), 4, "refused these credentials")
    nowhere = f"http://127.0.0.1:{free_port()}"
    assert_error(cli(cluster, "watch", "--exit-after", "5", url=nowhere), 3, nowhere)

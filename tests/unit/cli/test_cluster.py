"""The local cluster's commands in-process: what they refuse before starting anything, and ``status``
asking each replica (through the transport given as the root context's object)."""

import os
import re
from pathlib import Path

import httpx
from typer.testing import CliRunner, Result

from orthanc_jobs import cli
from orthanc_jobs.cluster.processes import OwnedProcess
from orthanc_jobs.cluster.state import ClusterState

REPLICAS = {"job-service-1": "http://127.0.0.1:8051", "job-service-2": "http://127.0.0.1:8052"}


def _cluster(*args: str, transport: httpx.BaseTransport | None = None) -> Result:
    return CliRunner().invoke(cli.app, ["cluster", *args], obj=transport)


def _words(output: str) -> str:
    """The output's text without the frame and line breaks of a usage error's box."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", output).split())


def _save_state(directory: Path) -> None:
    """A cluster of two replicas, both "running" (as this process)."""
    running = [OwnedProcess("job-service", name, os.getpid(), "python", "/dev/null") for name in REPLICAS]
    state = ClusterState(
        str(directory), "http://127.0.0.1:8042", REPLICAS["job-service-1"], {}, "s", running, dict(REPLICAS)
    )
    state.save()


def test_replicas_cannot_share_a_sqlite_file(tmp_path: Path) -> None:
    result = _cluster("up", "--service-replicas", "2", "--service-database", "sqlite", "--dir", str(tmp_path))

    assert result.exit_code == 2
    assert "--service-database: sqlite is for one replica only" in _words(result.output)
    assert list(tmp_path.iterdir()) == []  # nothing was started


def test_the_number_of_replicas_is_checked(tmp_path: Path) -> None:
    for wrong in ("0", "17", "two"):
        result = _cluster("up", "--service-replicas", wrong, "--dir", str(tmp_path))
        assert result.exit_code == 2, wrong
        assert "--service-replicas" in _words(result.output), wrong


def test_an_unknown_database_is_a_usage_error(tmp_path: Path) -> None:
    result = _cluster("up", "--service-database", "mysql", "--dir", str(tmp_path))

    assert result.exit_code == 2
    assert "is 'sqlite' or 'postgresql', not 'mysql'" in _words(result.output)


def test_status_shows_every_replica_and_the_leader(tmp_path: Path) -> None:
    _save_state(tmp_path)
    leader = {"127.0.0.1:8051": False, "127.0.0.1:8052": True}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/healthz"
        replica = request.url.netloc.decode()
        return httpx.Response(200, json={"Status": "ok", "Replica": replica, "Leader": leader[replica]})

    result = _cluster("status", "--dir", str(tmp_path), transport=httpx.MockTransport(handler))

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("job-service-1") and lines[0].endswith("follower")
    assert lines[1].startswith("job-service-2") and lines[1].endswith("leader")
    assert "Job-service, 2 replicas" in result.output


def test_status_says_which_replica_does_not_answer_and_fails(tmp_path: Path) -> None:
    _save_state(tmp_path)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.port == 8052:
            raise httpx.ReadTimeout("no answer", request=request)
        return httpx.Response(200, json={"Status": "ok"})  # a service that does not say who leads

    result = _cluster("status", "--dir", str(tmp_path), transport=httpx.MockTransport(handler))

    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].endswith("running")
    assert lines[1].endswith("NOT ANSWERING on /healthz")


def test_a_wrong_process_name_lists_the_valid_ones(tmp_path: Path) -> None:
    _save_state(tmp_path)

    for command in ("stop", "start", "restart"):
        result = _cluster(command, "job-service", "--dir", str(tmp_path))
        assert result.exit_code == 1, command
        assert "no process named 'job-service'" in result.output, command
        assert "job-service-1, job-service-2" in result.output, command


def test_status_shows_which_orthanc_each_server_runs(tmp_path: Path) -> None:
    """A mixed cluster (an upgrade under way) says which server runs which version, as each says itself."""
    servers = {"orthanc-1": "http://127.0.0.1:8001", "orthanc-2": "http://127.0.0.1:8002"}
    running = [OwnedProcess("orthanc", name, os.getpid(), "python", "/dev/null") for name in servers]
    state = ClusterState(
        str(tmp_path), "http://127.0.0.1:8042", "http://127.0.0.1:8050", servers, "s", running
    )
    state.save()
    versions = {8001: "1.10.1", 8002: "1.12.7"}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/healthz":  # the job-service
            return httpx.Response(200, json={"Status": "ok", "Replica": "job-service", "Leader": True})
        assert request.url.path == "/system" and request.headers["authorization"].startswith("Basic ")
        return httpx.Response(200, json={"Name": "x", "Version": versions[request.url.port]})

    result = _cluster("status", "--dir", str(tmp_path), transport=httpx.MockTransport(handler))

    lines = result.output.splitlines()
    assert lines[0].startswith("orthanc-1") and lines[0].endswith("running  Orthanc 1.10.1")
    assert lines[1].startswith("orthanc-2") and lines[1].endswith("running  Orthanc 1.12.7")

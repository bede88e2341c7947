"""Each job's JSON, read from this Orthanc over HTTP when its event happens (the capture thread and
LocalOrthanc)."""

import json
import socket
import threading
import time

import pytest

from orthanc_jobs.cluster.ports import free_port
from tests.unit.plugin.stubs import (
    JOB_SUCCESS,
    ORTHANC_VERSION,
    OrthancHttp,
    job_json,
    plugin,
)


def test_an_event_whose_job_cannot_be_read_is_sent_without_it(servers, make_reporter):
    stub = servers.stub()
    harness = make_reporter(stub.url, missing_jobs=("gone",))

    harness.reporter.on_change(JOB_SUCCESS, 0, "gone")
    harness.reporter.on_change(JOB_SUCCESS, 0, "here")

    assert harness.until(lambda: len(stub.delivered()) >= 2)
    assert stub.delivered() == [
        {"Type": "JOB_SUCCESS", "JobId": "gone"},
        {"Type": "JOB_SUCCESS", "JobId": "here", "Job": job_json("/jobs/here")},
    ]


def test_the_job_json_is_read_when_the_event_happens_not_when_the_service_is_back(servers, make_reporter):
    """Orthanc forgets finished jobs (JobsHistorySize): a job read only after an outage would be gone."""
    port = free_port()
    forgotten: set[str] = set()
    reads: list[str] = []

    def orthanc_forgets_after_one_read(uri):
        reads.append(uri)
        if uri == "/system":
            return json.dumps({"Version": ORTHANC_VERSION}).encode()
        job_id = uri.removeprefix("/jobs/")
        if job_id in forgotten:
            return None
        forgotten.add(job_id)
        return json.dumps(job_json(uri)).encode()

    harness = make_reporter(f"http://127.0.0.1:{port}", read_local=orthanc_forgets_after_one_read)
    for i in range(30):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")
    assert harness.until(lambda: len(harness.reporter.queue) == 30)

    stub = servers.stub(port)  # the job-service comes back only now

    assert harness.until(lambda: len(stub.delivered()) >= 30)
    assert stub.delivered() == [
        {"Type": "JOB_SUCCESS", "JobId": f"job-{i}", "Job": job_json(f"/jobs/job-{i}")} for i in range(30)
    ]
    assert [uri for uri in reads if uri.startswith("/jobs/")] == [f"/jobs/job-{i}" for i in range(30)]


def test_a_job_orthanc_cannot_write_or_a_failing_read_leaves_the_capture_thread_alive(servers, make_reporter):
    stub = servers.stub()
    answers = {
        "/jobs/raises": OSError("connection refused"),
        "/jobs/garbage": b"<html>not json</html>",
        "/jobs/empty": b"",
        "/jobs/weird": 42,
    }

    def read(uri):
        answer = answers.get(uri, json.dumps(job_json(uri)).encode())
        if isinstance(answer, Exception):
            raise answer
        return answer

    harness = make_reporter(stub.url, read_local=read)
    for job_id in ("raises", "garbage", "empty", "weird", "fine"):
        harness.reporter.on_change(JOB_SUCCESS, 0, job_id)

    assert harness.until(lambda: len(stub.delivered()) >= 5)
    assert stub.delivered() == [
        {"Type": "JOB_SUCCESS", "JobId": "raises"},
        {"Type": "JOB_SUCCESS", "JobId": "garbage"},
        {"Type": "JOB_SUCCESS", "JobId": "empty"},
        {"Type": "JOB_SUCCESS", "JobId": "weird"},
        {"Type": "JOB_SUCCESS", "JobId": "fine", "Job": job_json("/jobs/fine")},
    ]
    assert harness.reporter.capture_thread.is_alive()


def test_a_queue_of_one_still_reads_each_job(servers, make_reporter):
    stub = servers.stub()
    harness = make_reporter(stub.url, queue_size=1)
    harness.reporter.on_change(JOB_SUCCESS, 0, "job-1")
    assert harness.until(lambda: stub.delivered())
    assert stub.delivered() == [{"Type": "JOB_SUCCESS", "JobId": "job-1", "Job": job_json("/jobs/job-1")}]


def test_failing_reads_of_orthanc_are_logged_once_a_minute(servers, make_reporter, clock):
    stub = servers.stub()

    def refused(uri):
        raise plugin.OrthancAnswered(401)

    harness = make_reporter(stub.url, read_local=refused)
    for i in range(20):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")

    assert harness.until(lambda: len(stub.delivered()) >= 20)
    assert [e for e in harness.errors if "cannot read" in e] == [
        "orthanc-jobs: cannot read this Orthanc's jobs over HTTP (OrthancJobs.LocalUrl): Orthanc answered "
        "401; 1 read(s) failed so far, their events go without the job's JSON"
    ]
    assert harness.reporter.read_errors == 20

    clock.advance(plugin.LOG_INTERVAL - 1)
    harness.reporter.on_change(JOB_SUCCESS, 0, "job-20")
    assert harness.until(lambda: len(stub.delivered()) >= 21)
    assert len([e for e in harness.errors if "cannot read" in e]) == 1  # not within the minute
    clock.advance(1)
    harness.reporter.on_change(JOB_SUCCESS, 0, "job-21")
    assert harness.until(lambda: len(stub.delivered()) >= 22)
    assert [e for e in harness.errors if "cannot read" in e][1:] == [
        "orthanc-jobs: cannot read this Orthanc's jobs over HTTP (OrthancJobs.LocalUrl): Orthanc answered "
        "401; 22 read(s) failed so far, their events go without the job's JSON"
    ]


@pytest.mark.parametrize("keep_alive", [True, False])
def test_local_orthanc_reads_over_one_connection_with_the_token(keep_alive):
    orthanc = OrthancHttp({f"job-{i}": {"ID": f"job-{i}"} for i in range(20)}, keep_alive=keep_alive)
    local = plugin.LocalOrthanc(orthanc.url, "Bearer plugin-token", timeout=2)
    try:
        for i in range(20):
            assert json.loads(local.get(f"/jobs/job-{i}")) == {"ID": f"job-{i}"}
        assert local.get("/jobs/nan") is None  # Orthanc cannot write it: 400
        assert local.get("/jobs/unknown") is None  # 404
        assert all(token == "Bearer plugin-token" for _, token in orthanc.reads)
        assert orthanc.connections == (1 if keep_alive else 22)
    finally:
        orthanc.close()


def test_local_orthanc_raises_when_nothing_listens_then_connects_once_orthanc_is_up():
    port = free_port()
    local = plugin.LocalOrthanc(f"http://127.0.0.1:{port}", "Bearer t", timeout=2)
    with pytest.raises(OSError):
        local.get("/jobs/job-1")  # Orthanc's HTTP server not up yet: the capture thread sends without JSON
    orthanc = OrthancHttp({"job-1": {"ID": "job-1"}})
    try:
        local = plugin.LocalOrthanc(orthanc.url, "Bearer t", timeout=2)
        assert json.loads(local.get("/jobs/job-1")) == {"ID": "job-1"}
    finally:
        orthanc.close()


def test_local_orthanc_gives_up_a_stalled_read_after_its_timeout_once():
    """A time-out is not tried again: the capture thread waits ``Timeout``, not twice that."""
    answered = threading.Event()
    finished = threading.Event()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def serve_once_then_stall():
        connection, _ = listener.accept()
        connection.recv(65536)
        body = b'{"ID": "job-1"}'
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        answered.set()
        connection.recv(65536)  # the next request on the kept-alive connection: never answered
        finished.wait(3)
        connection.close()

    threading.Thread(target=serve_once_then_stall, daemon=True).start()
    local = plugin.LocalOrthanc(f"http://127.0.0.1:{listener.getsockname()[1]}", "Bearer t", timeout=0.5)
    try:
        assert local.get("/jobs/job-1") == b'{"ID": "job-1"}'
        started = time.monotonic()
        with pytest.raises(OSError):
            local.get("/jobs/job-2")
        assert time.monotonic() - started < 0.9
    finally:
        finished.set()
        listener.close()

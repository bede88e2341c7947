"""Orthanc stops: what is queued goes, with ORTHANC_STOPPED, within the shutdown budget.

These run on the real clock: how long Orthanc's shutdown waits, against real sockets, is what they check."""

import time

import pytest

from orthanc_jobs.cluster.ports import free_port
from tests.unit.plugin.stubs import (
    JOB_SUBMITTED,
    JOB_SUCCESS,
    ORTHANC_STOPPED,
    job_ids,
    plugin,
    wait_until,
)


@pytest.fixture
def clock():
    """The real clock, for the Reporters and the stand-ins."""
    return plugin.SystemClock()


def test_orthanc_stopped_change_sends_orthanc_stopped(servers, make_reporter):
    stub = servers.stub()
    harness = make_reporter(stub.url)
    assert wait_until(lambda: stub.received("/register"))

    harness.reporter.on_change(ORTHANC_STOPPED, 4, "")

    # Delivered before on_change returned, and the reporter is done.
    assert stub.delivered() == [{"Type": "ORTHANC_STOPPED"}]
    assert not harness.reporter.thread.is_alive()
    harness.reporter.on_change(JOB_SUBMITTED, 0, "job-late")  # after the stop: ignored, no error
    harness.reporter.on_change(ORTHANC_STOPPED, 4, "")
    harness.reporter.capture_thread.join(1)
    assert not harness.reporter.capture_thread.is_alive()
    assert stub.delivered() == [{"Type": "ORTHANC_STOPPED"}]


def stop_by(reporter, how: str) -> float:
    started = time.monotonic()
    if how == "stop":
        reporter.stop()
    else:
        reporter.on_change(ORTHANC_STOPPED, 4, "")
    return time.monotonic() - started


@pytest.mark.parametrize("how", ["stop", "on_change"])
def test_stop_is_quick_when_the_service_refuses_connections(make_reporter, how):
    harness = make_reporter(f"http://127.0.0.1:{free_port()}", timeout=2.0)
    for i in range(10):
        harness.reporter.on_change(JOB_SUBMITTED, 0, f"job-{i}")
    assert wait_until(lambda: harness.logged("cannot reach the job-service"))

    elapsed = stop_by(harness.reporter, how)

    assert elapsed < 1.0, f"stop took {elapsed:.3f} s"
    assert not harness.reporter.thread.is_alive()


@pytest.mark.parametrize("how", ["stop", "on_change"])
def test_stop_is_quick_when_the_service_never_answers(servers, make_reporter, how):
    silent = servers.raw()
    harness = make_reporter(silent.url, timeout=5.0)
    assert wait_until(lambda: silent.connections)  # the registration is hanging
    for i in range(10):
        harness.reporter.on_change(JOB_SUBMITTED, 0, f"job-{i}")

    elapsed = stop_by(harness.reporter, how)

    assert elapsed < 1.0, f"stop took {elapsed:.3f} s"


def test_stop_limits_its_requests_to_the_shutdown_budget(servers, make_reporter):
    stub = servers.stub()
    port = stub.port
    harness = make_reporter(stub.url, heartbeat_interval=30, timeout=5.0)
    assert wait_until(lambda: stub.received("/register"))
    stub.stop()
    silent = servers.raw(port)  # now the job-service accepts connections and never answers
    for i in range(10):
        harness.reporter.on_change(JOB_SUBMITTED, 0, f"job-{i}")

    elapsed = stop_by(harness.reporter, "stop")

    assert elapsed < 1.0, f"stop took {elapsed:.3f} s"
    assert silent.connections
    # The last request was given the budget's time, not the 5 s timeout: the sender ends with it.
    assert wait_until(lambda: not harness.reporter.thread.is_alive(), timeout=0.5)


@pytest.mark.parametrize("how", ["stop", "on_change"])
def test_stop_delivers_pending_events_and_orthanc_stopped_before_returning(servers, make_reporter, how):
    stub = servers.stub()
    harness = make_reporter(stub.url, heartbeat_interval=30)
    assert wait_until(lambda: stub.received("/register"))
    for i in range(50):
        harness.reporter.on_change(JOB_SUBMITTED, 0, f"job-{i}")

    elapsed = stop_by(harness.reporter, how)

    assert elapsed < 1.0
    delivered = stub.delivered()
    assert job_ids(delivered) == [f"job-{i}" for i in range(50)] + [None]
    assert delivered[-1] == {"Type": "ORTHANC_STOPPED"}
    assert not harness.reporter.thread.is_alive()


def test_stop_right_after_start_still_delivers(servers, make_reporter):
    stub = servers.stub()
    harness = make_reporter(stub.url, start=False)
    harness.reporter.on_change(JOB_SUBMITTED, 0, "job-0")
    harness.reporter.start()

    elapsed = stop_by(harness.reporter, "stop")

    assert elapsed < 1.0
    assert job_ids(stub.delivered()) == ["job-0", None]
    assert stub.delivered()[-1] == {"Type": "ORTHANC_STOPPED"}


def busy_service_with_three_events(servers, make_reporter):
    """A reporter with three job events to send, to a job-service that answers them 503 (busy)."""
    stub = servers.stub()
    harness = make_reporter(stub.url, heartbeat_interval=30)
    assert wait_until(lambda: stub.received("/register", 200))
    stub.refuse = lambda route, body: 503 if route == "/events" else None
    for i in range(3):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")
    return stub, harness


def test_at_shutdown_tries_go_on_until_the_deadline_then_what_is_left_is_logged(servers, make_reporter):
    stub, harness = busy_service_with_three_events(servers, make_reporter)

    started = time.monotonic()
    harness.reporter.stop(budget=0.5)

    assert time.monotonic() - started < 1.0
    assert len(stub.received("/events", 503)) >= 2  # tried again within the budget
    assert harness.logged_error("Orthanc stops: 4 event(s) not delivered")


def test_a_stop_during_a_long_backoff_does_not_wait_it_out(servers, make_reporter):
    """The service was busy (503) long enough for the backoff to grow past the shutdown budget, and is
    back when Orthanc stops: the events go at once, not after the rest of the backoff."""
    stub, harness = busy_service_with_three_events(servers, make_reporter)
    assert wait_until(lambda: len(stub.received("/events", 503)) >= 4, timeout=10)  # next wait: 1.6 s
    stub.refuse = None

    started = time.monotonic()
    harness.reporter.stop()

    assert time.monotonic() - started < 1.0
    assert job_ids(stub.delivered()) == ["job-0", "job-1", "job-2", None]
    assert not harness.logged_error("not delivered")

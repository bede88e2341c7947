"""Several replicas of the job-service: the reporter sends to the one that answered last, and passes a request
on to the next when that one is down, hangs up, times out or answers 502, 503 or 504."""

import time

import pytest

from orthanc_jobs.cluster.ports import free_port
from tests.unit.plugin.stubs import (
    HANG_UP,
    JOB_SUCCESS,
    ServiceStub,
    job_ids,
    job_json,
    plugin,
    wait_until,
)

SWITCHED = "now sending to the job-service at"


def replicas(servers) -> tuple[ServiceStub, ServiceStub]:
    """Two replicas of one job-service: a registration made on either is known to both (their database)."""
    first, second = servers.stub(), servers.stub()
    second.known = first.known
    return first, second


def send(harness, ids: range) -> None:
    for i in ids:
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")


def switches(harness) -> list[str]:
    return [line for line in harness.logs if SWITCHED in line]


def test_events_reach_the_second_replica_when_the_first_refuses_connections(servers, make_reporter):
    down = f"http://127.0.0.1:{free_port()}"
    second = servers.stub()
    harness = make_reporter([down, second.url], heartbeat_interval=30)

    send(harness, range(5))

    assert harness.until(lambda: len(second.delivered()) >= 5)
    assert second.delivered() == [
        {"Type": "JOB_SUCCESS", "JobId": f"job-{i}", "Job": job_json(f"/jobs/job-{i}")} for i in range(5)
    ]
    assert harness.logged(f"registered with the job-service at {second.url}")
    assert len(switches(harness)) == 1
    assert f"{SWITCHED} {second.url} ({down}: " in switches(harness)[0]


def test_a_503_passes_the_same_request_to_the_next_replica_at_once(servers, make_reporter):
    first, second = replicas(servers)
    harness = make_reporter([first.url, second.url], heartbeat_interval=30)
    harness.settled()
    first.plan("/events", 503)

    send(harness, range(3))

    assert harness.until(lambda: len(second.delivered()) >= 3)
    assert job_ids(second.delivered()) == ["job-0", "job-1", "job-2"]
    (refused,) = first.received("/events")
    accepted = second.received("/events")[0]
    assert refused.status == 503 and accepted.status == 200
    assert accepted.body == refused.body
    assert accepted.at == refused.at  # the same request, not a try again after a backoff
    assert not harness.logged("cannot reach the job-service")


def test_a_replica_hanging_up_mid_request_loses_nothing(servers, make_reporter):
    """It read the batch and died before answering: the batch goes to the next replica, in its place."""
    first, second = replicas(servers)
    harness = make_reporter([first.url, second.url], heartbeat_interval=30)
    harness.settled()
    first.plan("/events", HANG_UP)

    send(harness, range(5))
    assert harness.until(lambda: len(second.delivered()) >= 5)
    send(harness, range(5, 10))

    assert harness.until(lambda: len(second.delivered()) >= 10)
    harness.settled()
    assert job_ids(second.delivered()) == [f"job-{i}" for i in range(10)]
    (hung_up,) = first.received("/events")
    assert hung_up.status == HANG_UP
    assert second.received("/events")[0].body == hung_up.body
    assert not harness.reporter.queue


def test_after_a_switch_requests_stay_with_the_replica_that_answered(servers, make_reporter, clock):
    first, second = replicas(servers)
    harness = make_reporter([first.url, second.url], heartbeat_interval=1.0)
    harness.settled()
    first.plan("/events", 503)  # once: the first replica is fine again at once
    send(harness, range(3))
    assert harness.until(lambda: len(second.delivered()) >= 3)
    before = len(first.received())

    for step in range(4):
        send(harness, range(3 + step, 4 + step))
        clock.advance(1.0)
        harness.settled()

    assert len(first.received()) == before
    assert job_ids(second.delivered()) == [f"job-{i}" for i in range(7)]
    assert len(second.received("/heartbeat", 200)) >= 3
    assert len(switches(harness)) == 1


@pytest.mark.parametrize("status", [401, 500])
def test_other_error_answers_come_from_a_live_replica_and_stay_with_it(servers, make_reporter, status):
    first, second = replicas(servers)
    harness = make_reporter([first.url, second.url], heartbeat_interval=30)
    harness.settled()
    first.plan("/events", status)

    send(harness, range(3))

    assert harness.until(lambda: len(first.delivered()) >= 3)
    assert job_ids(first.delivered()) == ["job-0", "job-1", "job-2"]
    assert [r.status for r in first.received("/events")] == [status, 200]
    assert second.received() == []
    assert switches(harness) == []


def test_a_replica_that_does_not_know_this_orthanc_yet_gets_its_registration(servers, make_reporter):
    """The registration made on the first has not reached the second: its 404 brings one, then the batch."""
    first, second = servers.stub(), servers.stub()  # not sharing what they know
    harness = make_reporter([first.url, second.url], heartbeat_interval=30)
    harness.settled()
    first.plan("/events", 503)

    send(harness, range(3))

    assert harness.until(lambda: len(second.delivered()) >= 3)
    assert job_ids(second.delivered()) == ["job-0", "job-1", "job-2"]
    routes = [(r.route, r.status) for r in second.received()]
    assert routes[:3] == [("/events", 404), ("/register", 200), ("/events", 200)]
    assert harness.logged(f"registered with the job-service at {second.url}")


def test_when_no_replica_answers_the_events_wait_as_with_one(servers, make_reporter):
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    harness = make_reporter(urls, heartbeat_interval=30)
    send(harness, range(4))

    assert harness.until(
        lambda: harness.logged("cannot reach the job-service") and len(harness.reporter.queue) == 4
    )
    assert all(harness.logged(url) for url in urls)  # what each replica's failure was
    assert job_ids(harness.reporter.queue) == [f"job-{i}" for i in range(4)]
    assert switches(harness) == []

    back = servers.stub(port=ports[1])

    assert harness.until(lambda: len(back.delivered()) >= 4)
    assert job_ids(back.delivered()) == [f"job-{i}" for i in range(4)]
    assert len(switches(harness)) == 1


def test_no_url_at_all_is_harmless(make_reporter):
    harness = make_reporter([], heartbeat_interval=30)
    send(harness, range(2))

    assert harness.until(lambda: harness.logged("no job-service URL") and len(harness.reporter.queue) == 2)
    assert harness.reporter.thread.is_alive()
    assert job_ids(harness.reporter.queue) == ["job-0", "job-1"]


def test_the_shutdown_budget_holds_when_every_replica_hangs(servers, make_reporter):
    stub = servers.stub()
    others = [servers.raw(), servers.raw()]  # accept connections, never answer
    harness = make_reporter(
        [stub.url] + [server.url for server in others],
        heartbeat_interval=30,
        timeout=0.6,  # a second replica given the whole timeout would outlast the budget
        clock=plugin.SystemClock(),
    )
    assert wait_until(lambda: stub.received("/register", 200))
    stub.stop()
    silent = servers.raw(stub.port)  # the replica that answered now hangs too
    send(harness, range(10))

    started = time.monotonic()
    harness.reporter.stop()
    elapsed = time.monotonic() - started

    assert elapsed < plugin.SHUTDOWN_BUDGET + 0.15, f"stop took {elapsed:.3f} s"
    assert wait_until(lambda: not harness.reporter.thread.is_alive(), timeout=0.1)
    assert silent.connections and others[0].connections  # the next replica was tried, within the budget
    assert harness.logged_error("not delivered")

"""Registration, job events and heartbeats: what the reporter sends, when, and how it retries."""

import json

import pytest

from tests.unit.plugin.stubs import (
    JOB_FAILURE,
    JOB_SUBMITTED,
    JOB_SUCCESS,
    ORTHANC_VERSION,
    PREFIX,
    SECRET,
    job_ids,
    job_json,
    plugin,
)


def test_registers_at_start_with_identity_and_secret(servers, make_reporter, clock):
    stub = servers.stub()
    harness = make_reporter(stub.url + "/")  # a trailing slash in the configured URL is harmless

    harness.settled()
    register = stub.received("/register")[0]
    assert register.path == PREFIX + "/register"
    assert register.status == 200
    assert register.authorization == "Bearer " + SECRET
    assert register.content_type == "application/json"
    # The identity as given, with Orthanc's version read from its own REST API.
    assert register.body == {**harness.identity, "OrthancVersion": ORTHANC_VERSION}
    assert "/system" in harness.local_reads
    assert harness.logged("registered with the job-service")
    for _ in range(3):
        clock.advance(1.0)
        harness.settled()
    assert len(stub.received("/heartbeat")) == 3
    assert len(stub.received("/register")) == 1  # once, not at every heartbeat
    assert all(r.authorization == "Bearer " + SECRET for r in stub.received())
    # Every request names the server whose secret it carries.
    assert all(r.server == harness.identity["Url"] for r in stub.received())


def test_known_orthanc_version_is_not_asked_again(servers, make_reporter):
    stub = servers.stub()
    harness = make_reporter(stub.url, start=False)
    harness.reporter.identity["OrthancVersion"] = "1.11.0"
    harness.reporter.start()

    harness.settled()
    assert stub.received("/register")[0].body["OrthancVersion"] == "1.11.0"
    assert "/system" not in harness.local_reads


def test_job_events_are_sent_in_order_in_batches_with_the_job_json(servers, make_reporter):
    stub = servers.stub()
    harness = make_reporter(stub.url)
    types = [JOB_SUBMITTED, JOB_SUCCESS, JOB_FAILURE]
    count = 2 * plugin.BATCH_SIZE + 200

    for i in range(count):
        harness.reporter.on_change(types[i % 3], 0, f"job-{i}")

    assert harness.until(lambda: len(stub.delivered()) >= count)
    delivered = stub.delivered()
    names = {JOB_SUBMITTED: "JOB_SUBMITTED", JOB_SUCCESS: "JOB_SUCCESS", JOB_FAILURE: "JOB_FAILURE"}
    assert delivered == [
        {"Type": names[types[i % 3]], "JobId": f"job-{i}", "Job": job_json(f"/jobs/job-{i}")}
        for i in range(count)
    ]
    batches = stub.received("/events", 200)
    assert len(batches) >= 3
    assert all(0 < len(r.body["Events"]) <= plugin.BATCH_SIZE for r in batches)
    assert all(r.body["Incarnation"] == harness.identity["Incarnation"] for r in batches)
    assert [uri for uri in harness.local_reads if uri.startswith("/jobs/")] == [
        f"/jobs/job-{i}" for i in range(count)
    ]


def test_changes_other_than_jobs_are_ignored(servers, make_reporter):
    stub = servers.stub()
    harness = make_reporter(stub.url)
    harness.settled()

    for change_type in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 14, 15, 19, 20, 21):
        harness.reporter.on_change(change_type, 1, f"resource-{change_type}")
    harness.reporter.on_change(JOB_FAILURE, 0, "job-1")

    assert harness.until(lambda: stub.delivered())
    harness.settled()  # all done: nothing else waits to be sent
    assert stub.delivered() == [{"Type": "JOB_FAILURE", "JobId": "job-1", "Job": job_json("/jobs/job-1")}]
    assert [uri for uri in harness.local_reads if uri != "/system"] == ["/jobs/job-1"]
    assert not harness.reporter.queue


def test_heartbeats_keep_coming_paced_by_the_interval(servers, make_reporter, clock):
    stub = servers.stub()
    harness = make_reporter(stub.url, heartbeat_interval=1.0)
    first_due = harness.settled()
    registered_at = stub.received("/register")[0].at
    assert first_due == registered_at + 1.0

    for beat in range(1, 13):
        clock.advance(0.5)
        harness.settled()
        assert len(stub.received("/heartbeat")) == beat - 1  # not before the interval is over
        clock.advance(0.5)
        harness.settled()
        assert len(stub.received("/heartbeat")) == beat  # then one, not more

    heartbeats = stub.received("/heartbeat")
    assert [r.at - registered_at for r in heartbeats] == [float(beat) for beat in range(1, 13)]
    assert all(r.status == 200 for r in heartbeats)
    assert all(
        r.body == {"Incarnation": harness.identity["Incarnation"], "OrthancVersion": ORTHANC_VERSION}
        for r in heartbeats
    )
    assert all(r.authorization == "Bearer " + SECRET for r in heartbeats)


def test_heartbeat_404_makes_the_reporter_register_again(servers, make_reporter, clock):
    stub = servers.stub()
    harness = make_reporter(stub.url, heartbeat_interval=1.0)
    harness.settled()
    clock.advance(1.0)
    harness.settled()
    assert [r.status for r in stub.received("/heartbeat")] == [200]

    stub.forget()  # the job-service restarted: it no longer knows this incarnation
    clock.advance(1.0)

    assert harness.until(lambda: len(stub.received("/register")) == 2)
    assert [r.status for r in stub.received("/heartbeat")] == [200, 404]
    registers = stub.received("/register")
    assert registers[1].body["Incarnation"] == harness.identity["Incarnation"]
    assert registers[1].at - stub.received("/heartbeat", 404)[0].at == pytest.approx(0.2)  # after a backoff
    harness.settled()
    for beat in range(1, 4):
        clock.advance(1.0)
        harness.settled()
        assert [r.status for r in stub.received("/heartbeat")] == [200, 404] + [200] * beat
    assert len(stub.received("/register")) == 2


def test_events_404_makes_the_reporter_register_again_and_resend(servers, make_reporter):
    stub = servers.stub()
    # No heartbeat in the test's time: the 404 comes on /events.
    harness = make_reporter(stub.url, heartbeat_interval=30)
    harness.settled()

    stub.forget()
    for i in range(5):
        harness.reporter.on_change(JOB_SUBMITTED, 0, f"job-{i}")

    assert harness.until(lambda: len(stub.delivered()) >= 5)
    assert job_ids(stub.delivered()) == [f"job-{i}" for i in range(5)]
    routes = [(r.route, r.status) for r in stub.received()]
    assert routes[:4] == [("/register", 200), ("/events", 404), ("/register", 200), ("/events", 200)]
    assert routes[4:] == [("/events", 200)] * (len(routes) - 4)  # events captured after the first batch went
    refused, accepted = stub.received("/events")[:2]
    assert refused.body == accepted.body
    assert not stub.received("/heartbeat")


def test_events_are_not_lost_when_registering_again_fails(servers, make_reporter):
    stub = servers.stub()
    harness = make_reporter(stub.url, heartbeat_interval=30)
    harness.settled()

    stub.forget()
    stub.plan("/register", 500)  # the re-registration fails once
    for i in range(5):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")

    assert harness.until(lambda: len(stub.delivered()) >= 5)
    harness.settled()
    assert job_ids(stub.delivered()) == [f"job-{i}" for i in range(5)]
    assert [r.status for r in stub.received("/register")] == [200, 500, 200]
    assert harness.logged("cannot reach the job-service")


def test_events_500_are_retried_with_backoff(servers, make_reporter):
    stub = servers.stub()
    harness = make_reporter(stub.url, heartbeat_interval=30)
    harness.settled()

    stub.plan("/events", 500, 500)
    for i in range(3):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")

    assert harness.until(lambda: len(stub.delivered()) >= 3)
    harness.settled()
    assert job_ids(stub.delivered()) == ["job-0", "job-1", "job-2"]
    events = stub.received("/events")
    assert [r.status for r in events] == [500, 500, 200]
    assert [r.at - events[0].at for r in events] == pytest.approx([0, 0.2, 0.6])  # 0.2 s, then twice that


def test_503_on_events_while_heartbeats_succeed_is_never_given_up(servers, make_reporter):
    """503 says the job-service cannot take events now (its history cannot be written): keep them all."""
    stub = servers.stub()
    harness = make_reporter(stub.url, heartbeat_interval=1.0)
    stub.refuse = lambda route, body: 503 if route == "/events" else None
    for i in range(10):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")
    assert harness.until(lambda: len(stub.received("/events", 503)) >= 3 * plugin.TRIES_BEFORE_GIVING_UP)
    assert stub.received("/heartbeat", 200)
    assert harness.reporter.batch_limit == plugin.BATCH_SIZE  # not taken for the events' fault
    assert harness.reporter.dropped == 0 and harness.reporter.outbox.dropped_json == 0

    stub.refuse = None

    assert harness.until(lambda: len(stub.delivered()) >= 10)
    assert job_ids(stub.delivered()) == [f"job-{i}" for i in range(10)]
    assert all("Job" in event for event in stub.delivered())


def test_500_while_the_service_answers_nothing_else_is_retried_not_dropped(servers, make_reporter):
    """5xx on everything (the service is in trouble, not the events): keep the events, keep trying."""
    stub = servers.stub()
    harness = make_reporter(stub.url, heartbeat_interval=1.0)
    assert harness.until(lambda: stub.received("/heartbeat", 200))
    stub.refuse = lambda route, body: 503
    for i in range(3):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")
    assert harness.until(lambda: len(stub.received(status=503)) >= 8)
    assert harness.reporter.batch_limit == plugin.BATCH_SIZE  # not taken for the events' fault

    stub.refuse = None

    assert harness.until(lambda: len(stub.delivered()) >= 3)
    assert job_ids(stub.delivered()) == ["job-0", "job-1", "job-2"]
    assert harness.reporter.refused == 0 and harness.reporter.dropped == 0


def test_a_registration_refused_is_not_held_against_the_events(servers, make_reporter):
    stub = servers.stub()
    harness = make_reporter(stub.url, heartbeat_interval=30)
    harness.settled()
    stub.forget()
    stub.plan("/register", 400)
    for i in range(4):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")

    assert harness.until(lambda: len(stub.delivered()) >= 4)
    assert all("Job" in event for event in stub.delivered())
    assert [len(r.body["Events"]) for r in stub.received("/events", 200)] == [4]
    assert harness.reporter.isolating_through is None


def test_wrong_secret_is_retried_with_backoff_without_crashing(servers, make_reporter, clock):
    stub = servers.stub(secret="the-right-one")
    harness = make_reporter(stub.url, secret="a-wrong-one", heartbeat_interval=1.0)
    started = harness.settled() - 0.2  # the first attempt, refused: 0.2 s of backoff

    # Orthanc goes on producing events meanwhile; they must not turn the backoff into a busy retry.
    for step in range(10):
        for i in range(10 * step, 10 * step + 10):
            harness.reporter.on_change(JOB_SUBMITTED, 0, f"job-{i}")
        clock.advance_to(harness.settled())
    harness.settled()

    attempts = stub.received()
    assert all(r.route == "/register" and r.status == 403 for r in attempts)
    assert all(r.authorization == "Bearer a-wrong-one" for r in attempts)
    # One attempt per backoff, each twice as long as the one before, up to MAX_BACKOFF: not one per event.
    waits = [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0, 5.0, 5.0]
    assert [r.at - started for r in attempts] == pytest.approx([sum(waits[:n]) for n in range(11)])
    assert harness.reporter.thread.is_alive()
    assert harness.logged("403")
    assert len(harness.reporter.queue) == 100

    stub.secret = "a-wrong-one"  # the job-service is reconfigured: the reporter gets through
    assert harness.until(lambda: len(stub.delivered()) >= 100)
    assert job_ids(stub.delivered()) == [f"job-{i}" for i in range(100)]


@pytest.mark.parametrize(
    "reply",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}",  # the connection closes mid-body
    ],
    ids=["bad-status-line", "incomplete-body"],
)
def test_malformed_answers_do_not_kill_the_sender(servers, make_reporter, reply):
    garbage = servers.raw(reply=reply)
    harness = make_reporter(garbage.url)

    assert harness.until(lambda: len(garbage.connections) >= 2)
    assert harness.reporter.thread.is_alive()
    assert harness.logged("cannot reach the job-service")


def test_batches_fit_what_the_service_accepts_and_a_job_too_large_goes_without_json(servers, make_reporter):
    stub = servers.stub()
    stub.reply = lambda route, body: (
        json.dumps({"Status": "ok", "MaxBodyBytes": 4000}).encode() if route == "/register" else b"{}"
    )
    sizes = {"huge": 5000}

    def read(uri):
        job_id = uri.removeprefix("/jobs/")
        return json.dumps({"ID": job_id, "Padding": "x" * sizes.get(job_id, 300)}).encode()

    harness = make_reporter(stub.url, heartbeat_interval=30, read_local=read)
    harness.settled()
    assert harness.reporter.batch_bytes == 2000  # once the registration is answered
    harness.reporter.on_change(JOB_SUCCESS, 0, "huge")
    for i in range(20):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")

    assert harness.until(lambda: len(stub.delivered()) >= 21)
    assert stub.delivered()[0] == {"Type": "JOB_SUCCESS", "JobId": "huge"}
    assert all(len(json.dumps(r.body)) < 4000 for r in stub.received("/events"))
    assert harness.reporter.outbox.dropped_json == 1


def test_a_batch_refused_as_too_large_is_split(servers, make_reporter):
    stub = servers.stub()
    stub.refuse = lambda route, body: 413 if route == "/events" and len(body["Events"]) > 10 else None
    harness = make_reporter(stub.url, start=False)
    for i in range(25):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")
    harness.reporter.start()

    assert harness.until(lambda: len(stub.delivered()) >= 25)
    assert job_ids(stub.delivered()) == [f"job-{i}" for i in range(25)]
    assert all(len(r.body["Events"]) <= 10 for r in stub.received("/events", 200))


def test_events_the_service_refuses_one_by_one_are_logged_not_sent_again(servers, make_reporter):
    stub = servers.stub()
    refusal = {"Index": 0, "JobId": "job-0", "Reason": "the job's JSON cannot be stored"}
    stub.reply = lambda route, body: json.dumps(
        {"Accepted": len(body["Events"]) - 1, "Refused": [refusal]} if route == "/events" else {}
    ).encode()
    harness = make_reporter(stub.url, heartbeat_interval=30)
    harness.reporter.on_change(JOB_SUCCESS, 0, "job-0")
    assert harness.until(lambda: harness.logged_error("cannot be stored"))
    harness.reporter.on_change(JOB_SUCCESS, 0, "job-1")

    assert harness.until(lambda: len(stub.received("/events", 200)) == 2)
    harness.settled()
    assert job_ids(stub.delivered()) == ["job-0", "job-1"]
    assert harness.reporter.refused == 2


def test_job_json_goes_on_as_orthanc_wrote_it_however_deep():
    """The plugin never parses a job's JSON: nesting beyond Python's recursion limit cannot break it."""
    deep = b'{"ID": "job-1", "Content": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}"
    body = plugin._encode_events("inc-1", [{"Type": "JOB_SUCCESS", "JobId": "job-1", "Job": deep}])
    assert body.startswith(b'{"Incarnation": "inc-1", "Events": [{"Type": "JOB_SUCCESS", "JobId": "job-1", ')
    assert body.endswith(b'"Job": ' + deep + b"}]}")

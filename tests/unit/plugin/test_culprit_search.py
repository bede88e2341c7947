"""Events the job-service refuses: the one at fault found by halves, sent without its JSON, then let go;
the others flow."""

import itertools

from tests.unit.plugin.stubs import (
    JOB_SUCCESS,
    job_ids,
    job_json,
    plugin,
    refusing,
)


def test_an_event_refused_with_its_json_is_sent_without_it(servers, make_reporter):
    stub = servers.stub()

    stub.refuse = refusing(400, lambda event: event.get("JobId") == "poison" and "Job" in event)
    harness = make_reporter(stub.url)
    for job_id in ("before", "poison", "after"):
        harness.reporter.on_change(JOB_SUCCESS, 0, job_id)

    assert harness.until(lambda: len(stub.delivered()) >= 3)
    delivered = stub.delivered()
    assert job_ids(delivered) == ["before", "poison", "after"]
    assert "Job" not in delivered[1] and "Job" in delivered[2]


def test_an_event_always_refused_is_dropped_with_a_log_line_not_retried_forever(servers, make_reporter):
    stub = servers.stub()

    stub.refuse = refusing(400, lambda event: event.get("JobId") == "poison")
    harness = make_reporter(stub.url)
    for job_id in ("before", "poison", "after"):
        harness.reporter.on_change(JOB_SUCCESS, 0, job_id)
    harness.reporter.on_change(JOB_SUCCESS, 0, "later")

    assert harness.until(lambda: len(stub.delivered()) >= 3)
    assert job_ids(stub.delivered()) == ["before", "after", "later"]
    assert harness.until(lambda: harness.logged("refused an event"))
    assert len(stub.received("/register")) == 1  # a 400 is not a reason to register again


def test_an_event_answered_500_for_ever_is_let_go_and_the_later_ones_flow(servers, make_reporter):
    """A job-service that answers heartbeats but always fails on one event (a defect of its own) must not
    hold back every later event of the server: split, then sent without its JSON, then let go, loudly."""
    stub = servers.stub()

    stub.refuse = refusing(500, lambda event: event.get("JobId") == "poison")
    harness = make_reporter(stub.url)
    assert harness.until(lambda: stub.received("/register"))
    for job_id in ("before", "poison", "after"):
        harness.reporter.on_change(JOB_SUCCESS, 0, job_id)

    assert harness.until(lambda: len(stub.delivered()) >= 2, timeout=10)
    assert job_ids(stub.delivered()) == ["before", "after"]
    assert harness.until(lambda: harness.logged_error("refused an event"))
    harness.reporter.on_change(JOB_SUCCESS, 0, "later")
    assert harness.until(lambda: job_ids(stub.delivered())[-1:] == ["later"])
    poisoned = [r for r in stub.received("/events", 500) if len(r.body["Events"]) == 1]
    assert len(poisoned) <= 2 * plugin.TRIES_BEFORE_GIVING_UP  # a bounded number of tries, not for ever


def test_one_poisoned_event_among_many_costs_only_itself_through_the_usual_loop(servers, make_reporter):
    stub = servers.stub()

    stub.refuse = refusing(500, lambda event: event.get("JobId") == "job-123")
    harness = make_reporter(stub.url, start=False)
    for i in range(200):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")
    harness.reporter.start()

    assert harness.until(lambda: len(stub.delivered()) >= 199, timeout=20)
    assert job_ids(stub.delivered()) == [f"job-{i}" for i in range(200) if i != 123]
    # Found by halves, each through the sender's loop: a handful of requests, not a burst of hundreds.
    assert len(stub.received("/events")) < 40
    assert harness.until(
        lambda: (stub.received("/heartbeat", 200)[-1].body.get("Gap") or {}).get("DroppedEvents")
    )
    gap = stub.received("/heartbeat", 200)[-1].body["Gap"]
    assert (gap["DroppedEvents"], gap["DroppedJobJson"]) == (1, 1)
    assert harness.logged_error("refused an event (500); dropped")
    # Back to full batches afterwards.
    for i in range(200, 400):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")
    assert harness.until(lambda: len(stub.delivered()) >= 399, timeout=10)
    assert harness.reporter.isolating_through is None and harness.reporter.batch_limit == plugin.BATCH_SIZE


def test_a_500_after_a_search_ended_is_tried_again_not_held_against_an_innocent_event(servers, make_reporter):
    stub = servers.stub()

    stub.refuse = refusing(500, lambda event: event.get("JobId") == "culprit" and "Job" in event)
    harness = make_reporter(stub.url)
    harness.reporter.on_change(JOB_SUCCESS, 0, "culprit")  # refused with its JSON, fine without
    assert harness.until(lambda: job_ids(stub.delivered()) == ["culprit"], timeout=10)
    assert harness.until(lambda: harness.reporter.isolating_through is None)

    stub.refuse = None
    stub.plan("/events", 500, 500)  # a short hiccup of the service
    harness.reporter.on_change(JOB_SUCCESS, 0, "innocent")

    assert harness.until(lambda: len(stub.delivered()) >= 2, timeout=10)
    assert stub.delivered()[-1] == {
        "Type": "JOB_SUCCESS",
        "JobId": "innocent",
        "Job": job_json("/jobs/innocent"),
    }
    assert harness.reporter.dropped == 0


def test_each_halving_after_a_500_waits_for_a_heartbeat_answered(servers, make_reporter):
    stub = servers.stub()
    stub.refuse = lambda route, body: 500 if route == "/events" else None  # a service broken on events only
    # Heartbeats more often than the shortest backoff (0.2 s): each wait after a refusal holds one.
    harness = make_reporter(stub.url, heartbeat_interval=0.0625, start=False)
    for i in range(64):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")
    harness.reporter.start()
    assert harness.until(lambda: harness.reporter.dropped >= 1, timeout=20)

    routes = [(r.route, r.status) for r in stub.received() if r.route in ("/events", "/heartbeat")]
    refusals = [n for n, (route, _) in enumerate(routes) if route == "/events"]
    # Between two refused sends, the service answered a heartbeat: never a burst of halvings.
    assert all(("/heartbeat", 200) in routes[a:b] for a, b in itertools.pairwise(refusals))

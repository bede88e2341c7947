"""The outbox: what waits for the job-service, within its bounds, and the gap the heartbeats report."""

import json
import threading
import time

from orthanc_jobs.cluster.ports import free_port
from tests.unit.plugin.stubs import (
    JOB_FAILURE,
    JOB_SUBMITTED,
    JOB_SUCCESS,
    job_ids,
    job_json,
    plugin,
    wait_until,
)


def test_service_down_on_change_never_blocks_queue_drops_oldest_then_delivers(servers, make_reporter):
    port = free_port()
    reading = threading.Event()
    release = threading.Event()

    def read_slowly_at_first(uri):
        if uri == "/jobs/job-0":  # the reads fall behind the burst, by as much every time
            reading.set()
            release.wait(5)
        return json.dumps(job_json(uri)).encode()

    harness = make_reporter(
        f"http://127.0.0.1:{port}", queue_size=100, timeout=2.0, read_local=read_slowly_at_first
    )
    reporter = harness.reporter
    harness.settled()  # the sender has met the refused connection, and waits to try again

    started = time.monotonic()
    for i in range(1000):
        reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")
        if i == 0:
            assert reading.wait(2)
    elapsed = time.monotonic() - started
    release.set()

    # Far below one request to the unreachable service (its 2 s time-out): no call waited for it.
    assert elapsed < 1.0, f"1000 on_change calls took {elapsed:.3f} s"
    assert wait_until(harness.capture_idle)
    assert reporter.dropped == 900
    assert len(reporter.queue) == 100
    # Jobs are read as their events come, but 1000 in a burst outrun the reads: those read too late to be
    # worth it (half a queue behind) go without JSON, counted.
    assert [("Job" in event) for event in reporter.queue] == [False] * 50 + [True] * 50
    assert reporter.outbox.dropped_json == 50
    assert job_ids(list(reporter.queue)) == [f"job-{i}" for i in range(900, 1000)]  # the newest kept
    assert harness.logged("dropped")
    assert harness.logged("cannot reach the job-service")
    assert reporter.thread.is_alive()

    stub = servers.stub(port)  # the job-service comes back on the same port

    assert harness.until(lambda: len(stub.delivered()) >= 100)
    harness.settled()
    assert stub.received("/register", 200)
    assert job_ids(stub.delivered()) == [f"job-{i}" for i in range(900, 1000)]
    assert all(
        event.get("Job", job_json(f"/jobs/{event['JobId']}")) == job_json(f"/jobs/{event['JobId']}")
        for event in stub.delivered()
    )


def test_events_in_flight_when_the_service_goes_down_are_kept_or_dropped_oldest_first(servers, make_reporter):
    stub = servers.stub()
    port = stub.port
    harness = make_reporter(stub.url, heartbeat_interval=30, queue_size=100, timeout=0.5)
    reporter = harness.reporter
    assert harness.until(lambda: stub.received("/register"))
    stub.stop()
    silent = servers.raw(port)  # the job-service now accepts connections and never answers

    reporter.on_change(JOB_SUBMITTED, 0, "job-0")
    assert harness.until(lambda: silent.connections)  # job-0 is out of the queue, being sent
    for i in range(1, 101):
        reporter.on_change(JOB_SUBMITTED, 0, f"job-{i}")  # fills the queue, nothing dropped yet
    assert harness.until(lambda: len(reporter.queue) == 100 and not reporter.captures)
    assert reporter.dropped == 0

    # job-0's send times out: it comes back to a full queue, in front, and is the one dropped.
    assert harness.until(lambda: reporter.dropped == 1)
    assert harness.until(lambda: harness.logged("dropped"), timeout=1), harness.logs
    assert job_ids(reporter.queue) == [f"job-{i}" for i in range(1, 101)]

    silent.stop()
    stub = servers.stub(port)
    assert harness.until(lambda: len(stub.delivered()) >= 100)
    harness.settled()
    assert job_ids(stub.delivered()) == [f"job-{i}" for i in range(1, 101)]


def test_a_newer_event_with_json_replaces_the_queued_one_of_the_same_job(servers, make_reporter):
    port = free_port()
    states = {"job-1": iter(["Pending", "Success"]), "job-2": iter(["Pending"])}

    def read(uri):
        job_id = uri.removeprefix("/jobs/")
        state = next(states.get(job_id, iter(())), None)
        return None if state is None else json.dumps({"ID": job_id, "State": state}).encode()

    harness = make_reporter(f"http://127.0.0.1:{port}", read_local=read)
    reporter = harness.reporter
    reporter.on_change(JOB_SUBMITTED, 0, "job-1")
    reporter.on_change(JOB_SUBMITTED, 0, "job-2")
    reporter.on_change(JOB_SUCCESS, 0, "job-1")  # with its JSON: the one event job-1 needs
    reporter.on_change(JOB_FAILURE, 0, "job-2")  # Orthanc forgot it: must not take job-2's JSON away
    assert harness.until(lambda: len(reporter.queue) == 3 and not reporter.captures)

    stub = servers.stub(port)

    assert harness.until(lambda: len(stub.delivered()) >= 3)
    assert stub.delivered() == [
        {"Type": "JOB_SUBMITTED", "JobId": "job-2", "Job": {"ID": "job-2", "State": "Pending"}},
        {"Type": "JOB_SUCCESS", "JobId": "job-1", "Job": {"ID": "job-1", "State": "Success"}},
        {"Type": "JOB_FAILURE", "JobId": "job-2"},
    ]


def test_a_slow_read_never_lets_an_older_event_replace_a_newer_one(servers, make_reporter):
    """Reads fall far behind while a job's end event waits: the end event stays the last word."""
    port = free_port()
    reading = threading.Event()
    release = threading.Event()

    def slow_first_read(uri):
        if uri == "/jobs/job-a" and not reading.is_set():
            reading.set()
            release.wait(3)
            return json.dumps({"ID": "job-a", "State": "Pending"}).encode()
        return json.dumps({"ID": uri.removeprefix("/jobs/"), "State": "Success"}).encode()

    harness = make_reporter(f"http://127.0.0.1:{port}", queue_size=4, read_local=slow_first_read)
    reporter = harness.reporter
    reporter.on_change(JOB_SUBMITTED, 0, "job-a")
    assert reading.wait(2)
    reporter.on_change(JOB_SUCCESS, 0, "job-a")
    for i in range(6):  # the reads fall behind: some are skipped, the oldest dropped
        reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")
    release.set()
    assert harness.until(lambda: not reporter.captures and reporter.capturing is None)

    stub = servers.stub(port)

    assert harness.until(lambda: stub.delivered() and not reporter.queue)
    delivered = stub.delivered()
    of_a = [event["Type"] for event in delivered if event["JobId"] == "job-a"]
    assert not of_a or of_a[-1] == "JOB_SUCCESS"
    # 8 events: each delivered, or counted as dropped, but for job-a's first event, which its end may replace.
    assert len(delivered) + reporter.dropped >= 7


def test_beyond_its_bytes_the_queue_lets_go_of_the_oldest_json_first_and_says_so(servers, make_reporter):
    port = free_port()
    size = len(json.dumps(job_json("/jobs/job-00")))
    harness = make_reporter(f"http://127.0.0.1:{port}", queue_size=100, queue_bytes=10 * size)
    reporter = harness.reporter
    for i in range(25):
        reporter.on_change(JOB_SUCCESS, 0, f"job-{i:02d}")
    assert harness.until(lambda: len(reporter.queue) == 25 and not reporter.captures)

    assert [("Job" in event) for event in reporter.queue] == [False] * 15 + [True] * 10
    assert reporter.outbox.dropped_json == 15 and reporter.dropped == 0
    assert [e for e in harness.errors if "dropped" in e] == [  # at the first loss, not at each one
        "orthanc-jobs: the job-service unreachable or refusing: 0 job event(s) dropped so far, and "
        "the JSON of 1 job(s) (QueueSize 100, QueueBytes "
        + str(10 * size)
        + "); the job-service shows this gap"
    ]

    stub = servers.stub(port)
    assert harness.until(lambda: len(stub.delivered()) >= 25)
    assert job_ids(stub.delivered()) == [f"job-{i:02d}" for i in range(25)]  # every event still arrives
    assert harness.until(lambda: stub.received("/heartbeat", 200))
    gap = stub.received("/heartbeat", 200)[-1].body["Gap"]
    assert (gap["DroppedEvents"], gap["DroppedJobJson"]) == (0, 15)
    assert gap["First"] <= gap["Last"] <= harness.clock.time()


def test_beyond_its_size_the_queue_drops_the_oldest_events_and_heartbeats_show_the_gap(
    servers, make_reporter
):
    port = free_port()
    harness = make_reporter(f"http://127.0.0.1:{port}", queue_size=20)
    for i in range(50):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")
    assert harness.until(lambda: harness.reporter.dropped == 30 and not harness.reporter.captures)
    # Logged as an error at the first loss, not at each one.
    assert len([e for e in harness.errors if "dropped" in e]) == 1

    stub = servers.stub(port)

    assert harness.until(lambda: len(stub.delivered()) >= 20)
    assert job_ids(stub.delivered()) == [f"job-{i}" for i in range(30, 50)]
    assert harness.until(lambda: stub.received("/heartbeat", 200))
    gap = stub.received("/heartbeat", 200)[-1].body["Gap"]
    # 50 events in a burst outrun the reads too: those read too late went without JSON, counted.
    without_json = len([event for event in stub.delivered() if "Job" not in event])
    assert (gap["DroppedEvents"], gap["DroppedJobJson"]) == (30, without_json)


def test_no_gap_is_reported_when_nothing_was_dropped(servers, make_reporter):
    stub = servers.stub()
    harness = make_reporter(stub.url)
    harness.reporter.on_change(JOB_SUCCESS, 0, "job-1")
    assert harness.until(lambda: stub.delivered() and len(stub.received("/heartbeat", 200)) >= 3)
    assert all("Gap" not in r.body for r in stub.received("/heartbeat"))


def test_sent_events_hold_no_memory_and_batches_are_bounded_in_bytes(servers, make_reporter, monkeypatch):
    monkeypatch.setattr(plugin, "BATCH_BYTES", 50_000)
    port = free_port()
    big = {"ID": "x", "State": "Success", "Content": {"Padding": "x" * 10_000}}

    def read(uri):
        return json.dumps(dict(big, ID=uri.removeprefix("/jobs/"))).encode()

    harness = make_reporter(f"http://127.0.0.1:{port}", read_local=read)
    for i in range(100):
        harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")
    assert harness.until(lambda: len(harness.reporter.queue) == 100)

    stub = servers.stub(port)

    assert harness.until(lambda: len(stub.delivered()) >= 100)
    assert all(len(json.dumps(r.body)) < 60_000 for r in stub.received("/events", 200))  # about 4 jobs each
    outbox = harness.reporter.outbox
    assert outbox.bytes == 0
    assert len(outbox.with_json) <= 64 and all(isinstance(seq, int) for _, seq in outbox.with_json)


def test_losses_many_at_once_are_logged(make_reporter):
    harness = make_reporter(f"http://127.0.0.1:{free_port()}", queue_size=5, start=False)
    reporter = harness.reporter
    for i in range(5):
        reporter.on_change(JOB_SUCCESS, 0, f"job-{i}")
    with reporter.lock:
        while reporter.captures:
            reporter._queue(reporter.captures.popleft())
    in_flight = [{"Type": "JOB_SUCCESS", "JobId": f"old-{i}", "_seq": -i} for i in range(3)]

    reporter._give_back(in_flight)  # three dropped at once, the first losses

    assert reporter.dropped == 3
    assert [e for e in harness.errors if "dropped" in e] == [
        "orthanc-jobs: the job-service unreachable or refusing: 3 job event(s) dropped so far, and the JSON "
        "of 0 job(s) (QueueSize 5, QueueBytes 67108864); the job-service shows this gap"
    ]

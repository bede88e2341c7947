"""Orthanc's threads call on_change: it never waits, and loses nothing."""

import json
import threading

from tests.unit.plugin.stubs import (
    JOB_SUCCESS,
    job_ids,
    job_json,
    wait_until,
)


def test_on_change_from_many_threads_loses_nothing_and_keeps_each_threads_order(servers, make_reporter):
    stub = servers.stub()
    harness = make_reporter(stub.url, heartbeat_interval=30, queue_size=100_000)
    reporter = harness.reporter

    def orthanc_thread(number: int) -> None:
        for i in range(5000):
            reporter.on_change(JOB_SUCCESS, 0, f"job-{number}-{i}")

    threads = [threading.Thread(target=orthanc_thread, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert wait_until(lambda: len(stub.delivered()) >= 20_000, timeout=60)
    delivered = job_ids(stub.delivered())
    assert len(delivered) == len(set(delivered)) == 20_000
    for number in range(4):  # in the order each thread emitted them
        mine = [job_id for job_id in delivered if job_id.startswith(f"job-{number}-")]
        assert mine == [f"job-{number}-{i}" for i in range(5000)]


def test_on_change_never_waits_for_the_network_or_for_reads_of_orthanc(servers, make_reporter):
    """The job-service never answers and the read of Orthanc never returns (until the test lets it): Orthanc's
    threads only append to a queue under a lock, so their calls all return meanwhile. (Not a timing: a call
    that waited for either would not return at all.)"""
    silent = servers.raw()
    release = threading.Event()

    def stuck_read(uri):
        if uri.startswith("/jobs/"):
            release.wait(30)
        return json.dumps(job_json(uri)).encode()

    harness = make_reporter(silent.url, timeout=30.0, read_local=stuck_read)
    assert wait_until(lambda: silent.connections)  # the registration hangs
    harness.reporter.on_change(JOB_SUCCESS, 0, "job-first")
    assert wait_until(lambda: harness.reporter.capturing is not None)  # its read hangs

    def orthanc_thread(number: int) -> None:
        for i in range(2000):
            harness.reporter.on_change(JOB_SUCCESS, 0, f"job-{number}-{i}")

    threads = [threading.Thread(target=orthanc_thread, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    try:
        assert not any(thread.is_alive() for thread in threads)
        assert len(harness.reporter.captures) == 8000 and harness.reporter.dropped == 0
    finally:
        release.set()

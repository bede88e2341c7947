"""Metrics: jobs ended, where their time went (waiting for a slot, running), stuck jobs, the oldest
pending job, read as Prometheus reads them."""

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orthanc_jobs.core.metrics import Metrics
from orthanc_jobs.core.registry import Registry
from orthanc_jobs.core.store import SqliteStore
from tests.unit.core.test_registry import JOB_A, JOB_B, JOB_C, Clock, job, register


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.collectors).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _setup() -> tuple[Clock, Registry, Metrics]:
    clock = Clock()
    registry = Registry(
        SqliteStore(":memory:"), not_responding_after=10, stopped_after=60, stuck_after=600, clock=clock
    )
    metrics = Metrics(registry, clock=clock)
    registry.subscribers.append(metrics.record)
    return clock, registry, metrics


LABELS = (("server", "orthanc-1"), ("type", "DicomModalityStore"))


def test_waiting_and_running_times_come_from_orthancs_own_clock() -> None:
    _, registry, metrics = _setup()
    server = register(registry)
    store = {"Type": "DicomModalityStore", "CreationTime": "20261128T100000.000000"}
    registry.apply_snapshot(server, job(JOB_A, "Pending", **store, Timestamp="20261128T100000.000000"))
    # Started at 10:00:40 (its Timestamp less the 20 s it ran): it waited 40 s for a slot.
    registry.apply_snapshot(
        server, job(JOB_A, "Running", **store, Timestamp="20261128T100100.000000", EffectiveRuntime=20.0)
    )
    registry.apply_snapshot(
        server, job(JOB_A, "Failure", **store, Timestamp="20261128T100300.000000", EffectiveRuntime=140.5)
    )
    samples = _samples(metrics)
    assert samples["orthanc_jobs_wait_seconds_sum", LABELS] == 40.0
    assert samples["orthanc_jobs_wait_seconds_count", LABELS] == 1
    assert samples["orthanc_jobs_run_seconds_sum", LABELS] == 140.5
    assert samples["orthanc_jobs_finished_total", (*LABELS[:1], ("state", "Failure"), LABELS[1])] == 1
    # The bucket of 60 s holds the wait, not the run.
    bucket = (("le", "60.0"), *LABELS)
    assert samples["orthanc_jobs_wait_seconds_bucket", bucket] == 1
    assert samples["orthanc_jobs_run_seconds_bucket", bucket] == 0


def test_a_job_lost_with_its_process_counts_as_a_failure_without_times() -> None:
    _, registry, metrics = _setup()
    server = register(registry)
    store = {"Type": "DicomModalityStore", "EffectiveRuntime": 3.0}
    registry.apply_snapshot(server, job(JOB_A, "Running", **store))
    registry.mark_server_stopped(server)
    samples = _samples(metrics)
    assert samples["orthanc_jobs_finished_total", (*LABELS[:1], ("state", "Failure"), LABELS[1])] == 1
    assert samples.get(("orthanc_jobs_run_seconds_count", LABELS), 0) == 0
    # A cancelled pending job never started: no wait, no run.
    server = register(registry, "orthanc-1", "inc-2")
    registry.apply_snapshot(server, job(JOB_B, "Pending", Type="DicomModalityStore"))
    registry.apply_snapshot(
        server, job(JOB_B, "Failure", Type="DicomModalityStore", Timestamp="20261128T110000.000000")
    )
    samples = _samples(metrics)
    assert samples["orthanc_jobs_wait_seconds_count", LABELS] == 1  # JOB_A's, first seen running
    assert samples["orthanc_jobs_finished_total", (*LABELS[:1], ("state", "Failure"), LABELS[1])] == 2


def test_stuck_jobs_and_the_oldest_pending_job_are_read_at_each_scrape() -> None:
    clock, registry, metrics = _setup()
    server = register(registry)
    assert _samples(metrics)["orthanc_jobs_oldest_pending_age_seconds", ()] == 0
    created = "19700112T134000.000000"  # 400 s before the clock's now
    registry.apply_snapshot(server, job(JOB_A, "Pending", created=created))
    registry.apply_snapshot(server, job(JOB_B, "Pending", created="19700112T134500.000000"))
    registry.apply_snapshot(server, job(JOB_C, "Running", Type="DicomModalityStore"))
    samples = _samples(metrics)
    assert samples["orthanc_jobs_oldest_pending_age_seconds", ()] == 400
    assert ("orthanc_jobs_stuck_jobs", LABELS) not in samples
    clock.now += 600
    assert _samples(metrics)["orthanc_jobs_stuck_jobs", LABELS] == 1


def test_a_job_done_in_no_measurable_time_still_waited_and_ran() -> None:
    _, registry, metrics = _setup()
    server = register(registry)
    store = {"Type": "DicomModalityStore", "CreationTime": "20261128T100000.000000"}
    registry.apply_snapshot(server, job(JOB_A, "Pending", **store, Timestamp="20261128T100000.000000"))
    registry.apply_snapshot(
        server, job(JOB_A, "Success", **store, Timestamp="20261128T100002.000000", EffectiveRuntime=0.0)
    )
    samples = _samples(metrics)
    assert samples["orthanc_jobs_run_seconds_count", LABELS] == 1
    assert samples["orthanc_jobs_wait_seconds_sum", LABELS] == 2.0


def test_a_job_resubmitted_or_resumed_waited_for_its_first_slot_only() -> None:
    """Orthanc keeps a resubmitted job's CreationTime: its second start is no wait of hours."""
    _, registry, metrics = _setup()
    server = register(registry)
    store = {"Type": "DicomModalityStore", "CreationTime": "20261128T100000.000000"}
    registry.apply_snapshot(server, job(JOB_A, "Pending", **store, Timestamp="20261128T100000.000000"))
    registry.apply_snapshot(
        server, job(JOB_A, "Running", **store, Timestamp="20261128T100003.000000", EffectiveRuntime=0.0)
    )
    registry.apply_snapshot(
        server, job(JOB_A, "Failure", **store, Timestamp="20261128T100004.000000", EffectiveRuntime=1.0)
    )
    for stamp, state in [
        ("20261128T180000", "Pending"),
        ("20261128T180001", "Running"),
        ("20261128T180002", "Paused"),
        ("20261128T180003", "Pending"),
        ("20261128T180004", "Running"),
    ]:
        registry.apply_snapshot(
            server, job(JOB_A, state, **store, Timestamp=stamp + ".000000", EffectiveRuntime=0.5)
        )
    samples = _samples(metrics)
    assert samples["orthanc_jobs_wait_seconds_count", LABELS] == 1
    assert samples["orthanc_jobs_wait_seconds_sum", LABELS] == 3.0


def test_a_failure_again_after_a_resubmit_is_a_new_end_even_unseen_in_between() -> None:
    """A C-STORE to a closed port fails again within milliseconds of its resubmit: the next reading is a
    Failure again, with a new CompletionTime. The owner confirming an end presumed here is no new end."""
    _, registry, metrics = _setup()
    server = register(registry)
    store = {"Type": "DicomModalityStore", "CreationTime": "20261128T100000.000000", "EffectiveRuntime": 0.1}
    registry.apply_snapshot(server, job(JOB_A, "Failure", **store, CompletionTime="20261128T100001.000000"))
    registry.apply_snapshot(
        server,
        job(
            JOB_A,
            "Failure",
            **store,
            CompletionTime="20261128T120001.000000",
            Timestamp="20261128T120001.000000",
        ),
    )
    failures = (*LABELS[:1], ("state", "Failure"), LABELS[1])
    assert _samples(metrics)["orthanc_jobs_finished_total", failures] == 2
    # Lost with its process (presumed), then its owner's own word: one failure.
    registry.apply_snapshot(server, job(JOB_B, "Running", **store))
    registry.mark_server_stopped(server)
    assert _samples(metrics)["orthanc_jobs_finished_total", failures] == 3

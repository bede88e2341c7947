"""Stuck jobs: a running job whose progress stays still for ``stuck_after`` is flagged, told once, and
cleared when it moves again or ends."""

import orjson

from orthanc_jobs.core.changes import Change, JobStuck
from orthanc_jobs.core.registry import Registry
from orthanc_jobs.core.store import SqliteStore
from orthanc_jobs.core.wire import expanded_jobs, frame_for, server_field
from tests.unit.core.test_registry import JOB_A, JOB_B, Clock, job, register


def _registry(clock: Clock, leading: bool = True) -> tuple[Registry, list[Change]]:
    registry = Registry(
        SqliteStore(":memory:"),
        not_responding_after=10,
        stopped_after=60,
        stuck_after=600,
        clock=clock,
        leading=lambda: leading,
    )
    told: list[Change] = []
    registry.subscribers.append(told.append)
    return registry, told


def _stuck_told(told: list[Change]) -> list[tuple[str, bool]]:
    return [(change.job.id, change.stuck) for change in told if isinstance(change, JobStuck)]


def test_a_running_job_still_for_too_long_is_stuck_until_its_progress_moves() -> None:
    clock = Clock()
    registry, told = _registry(clock)
    server = register(registry)
    registry.apply_snapshot(server, job(JOB_A, Progress=10))
    registry.apply_snapshot(server, job(JOB_B, "Pending"))
    started = clock.now
    clock.now += 599
    # Polled again with the same progress (a later Timestamp): still not moving.
    registry.apply_snapshot(server, job(JOB_A, Progress=10, Timestamp="20261128T110000.000000"))
    registry.check_stuck()
    assert registry.stuck_jobs() == [] and _stuck_told(told) == []
    clock.now += 1
    registry.check_stuck()
    registry.check_stuck()  # told once
    [stuck] = registry.stuck_jobs()
    assert stuck.id == JOB_A and registry.stuck_since(stuck) == started
    assert _stuck_told(told) == [(JOB_A, True)]
    field = orjson.loads(server_field(registry, stuck))
    assert field["Stuck"] is True and field["StuckSince"] == "19700112T134640.000000"
    assert orjson.loads(expanded_jobs(registry, [stuck]))[0]["Server"]["Stuck"] is True
    assert frame_for(registry, JobStuck(stuck, True))[0] == "job"  # the event stream shows it

    registry.apply_snapshot(server, job(JOB_A, Progress=11, Timestamp="20261128T110001.000000"))
    moved = registry.get_job(JOB_A)
    assert registry.stuck_since(moved) is None
    assert orjson.loads(server_field(registry, moved))["Stuck"] is False
    registry.check_stuck()
    assert _stuck_told(told) == [(JOB_A, True), (JOB_A, False)]


def test_paused_pending_and_finished_jobs_are_never_stuck() -> None:
    clock = Clock()
    registry, told = _registry(clock)
    server = register(registry)
    registry.apply_snapshot(server, job(JOB_A, "Paused"))
    registry.apply_snapshot(server, job(JOB_B, "Pending"))
    clock.now += 10_000
    registry.check_stuck()
    assert registry.stuck_jobs() == [] and _stuck_told(told) == []
    assert registry.oldest_pending().id == JOB_B  # type: ignore[union-attr]


def test_a_stuck_job_that_ends_is_cleared() -> None:
    clock = Clock()
    registry, told = _registry(clock)
    server = register(registry)
    registry.apply_snapshot(server, job(JOB_A))
    clock.now += 700
    registry.check_stuck()
    registry.apply_snapshot(server, job(JOB_A, "Failure", Timestamp="20261128T120000.000000"))
    registry.check_stuck()
    assert _stuck_told(told) == [(JOB_A, True), (JOB_A, False)]


def test_only_the_leader_tells_but_every_replica_shows() -> None:
    clock = Clock()
    registry, told = _registry(clock, leading=False)
    server = register(registry)
    registry.apply_snapshot(server, job(JOB_A))
    clock.now += 700
    registry.check_stuck()
    assert _stuck_told(told) == []
    assert [j.id for j in registry.stuck_jobs()] == [JOB_A]


def test_a_job_installed_from_another_replica_keeps_when_its_progress_last_moved() -> None:
    clock = Clock()
    registry, _ = _registry(clock)
    server = register(registry)
    first = registry.apply_snapshot(server, job(JOB_A, Progress=5))
    assert first is not None
    clock.now += 300
    later = registry.apply_snapshot(server, job(JOB_A, Progress=5, Timestamp="20261128T110000.000000"))
    assert later is not None and later.progress_since == first.progress_since
    from orthanc_jobs.core.model import Job

    same = Job.from_content(
        dict(later.content, Timestamp="20261128T110005.000000"),
        server_url=server.url,
        incarnation=server.incarnation,
        first_seen=later.first_seen,
    )
    registry.install_job(same)
    assert registry.get_job(JOB_A).progress_since == first.progress_since  # type: ignore[union-attr]

"""The registry: where every job and server state change is decided."""

from datetime import UTC, datetime
from typing import Any

import pytest

from orthanc_jobs.core.filters import JobQuery, ResourceSearch, TextSearch, TimeRange
from orthanc_jobs.core.model import Job, Server, ServerStatus
from orthanc_jobs.core.registry import LOST_JOB_ERROR_CODE, Registry, orthanc_timestamp
from orthanc_jobs.core.store import SqliteStore

JOB_A = "11111111-1111-1111-1111-111111111111"
JOB_B = "22222222-2222-2222-2222-222222222222"
JOB_C = "33333333-3333-3333-3333-333333333333"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def job(job_id: str, state: str = "Running", created: str = "20261128T100000.000000", **extra: Any) -> dict:
    return {
        "ID": job_id,
        "Type": extra.pop("Type", "Archive"),
        "State": state,
        "Progress": 50,
        "CreationTime": created,
        "Timestamp": extra.pop("Timestamp", "20261128T100001.000000"),
        "ErrorCode": 0,
        "ErrorDescription": "Success",
        **extra,
    }


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry(clock: Clock) -> Registry:
    return Registry(SqliteStore(":memory:"), not_responding_after=10, stopped_after=60, clock=clock)


def register(registry: Registry, name: str = "orthanc-1", incarnation: str = "inc-1"):
    url = f"http://127.0.0.1:{8000 + int(name[-1])}"
    return registry.register_server(name=name, url=url, incarnation=incarnation, token="Bearer t")


def test_jobs_are_listed_in_creation_order_whatever_the_arrival(registry: Registry) -> None:
    server = register(registry)
    registry.apply_snapshot(server, job(JOB_C, created="20261128T100003.000000"))
    registry.apply_snapshot(server, job(JOB_A, created="20261128T100001.000000"))
    registry.apply_snapshot(server, job(JOB_B, created="20261128T100002.000000"))
    assert [j.id for j in registry.list_jobs()] == [JOB_A, JOB_B, JOB_C]


def test_an_older_snapshot_never_overwrites_a_newer_one(registry: Registry) -> None:
    server = register(registry)
    registry.apply_snapshot(server, job(JOB_A, "Success", Timestamp="20261128T100005.000000"))
    registry.apply_snapshot(server, job(JOB_A, "Running", Timestamp="20261128T100004.000000"))
    assert registry.get_job(JOB_A).state == "Success"
    registry.apply_snapshot(server, job(JOB_A, "Pending", Timestamp="20261128T100006.000000"))  # resubmitted
    assert registry.get_job(JOB_A).state == "Pending"
    assert registry.list_jobs(JobQuery(states=frozenset({"Success"}))) == []


def test_invalid_snapshots_are_ignored(registry: Registry) -> None:
    server = register(registry)
    assert registry.apply_snapshot(server, job("../../patients")) is None
    assert registry.apply_snapshot(server, job(JOB_A, state="Exploded")) is None
    assert len(registry) == 0


def test_a_job_id_never_moves_to_another_server(registry: Registry) -> None:
    first = register(registry, "orthanc-1", "inc-1")
    second = register(registry, "orthanc-2", "inc-2")
    registry.apply_snapshot(first, job(JOB_A))
    registry.apply_snapshot(second, job(JOB_A, "Failure", Timestamp="20261128T200000.000000"))
    assert (registry.get_job(JOB_A).server_url, registry.get_job(JOB_A).state) == (first.url, "Running")


def test_filters_combine(registry: Registry) -> None:
    first = register(registry, "orthanc-1", "inc-1")
    second = register(registry, "orthanc-2", "inc-2")
    registry.apply_snapshot(first, job(JOB_A, "Running", Type="Archive"))
    registry.apply_snapshot(first, job(JOB_B, "Success", Type="ResourceModification"))
    registry.apply_snapshot(second, job(JOB_C, "Running", Type="ResourceModification"))
    ids = lambda **f: sorted(j.id for j in registry.list_jobs(JobQuery(**f)))  # noqa: E731
    assert ids(states=frozenset({"Running"})) == [JOB_A, JOB_C]
    assert ids(types=frozenset({"resourcemodification"})) == [JOB_B, JOB_C]
    assert ids(server_urls=frozenset({first.url})) == [JOB_A, JOB_B]
    assert ids(states=frozenset({"Running"}), server_urls=frozenset({second.url})) == [JOB_C]
    assert registry.job_counts(first)["Running"] == 1
    assert registry.job_counts(first)["Success"] == 1


def test_a_completion_event_without_json_keeps_what_is_known(registry: Registry) -> None:
    from orthanc_jobs.core.model import JobState

    server = register(registry)
    registry.apply_snapshot(server, job(JOB_A, Content={"ArchiveSize": "10"}))
    registry.apply_terminal_event(server, JOB_A, JobState.SUCCESS)
    known = registry.get_job(JOB_A)
    assert known.state == "Success"
    assert known.content["Content"] == {"ArchiveSize": "10"}
    assert known.content["Progress"] == 100
    assert known.timestamp == "20261128T100001.000000"  # Orthanc's own, not the service's clock


def test_an_end_event_of_a_job_never_seen_records_its_outcome(registry: Registry, clock: Clock) -> None:
    """Orthanc forgot the job (JobsHistorySize) before its plugin could read it: the outcome is kept."""
    from orthanc_jobs.core.model import JobState

    server = register(registry)
    event_time = clock.now - 5
    succeeded = registry.apply_terminal_event(server, JOB_B, JobState.SUCCESS, event_time)
    failed = registry.apply_terminal_event(server, JOB_C, JobState.FAILURE, event_time)

    assert succeeded is not None and failed is not None
    assert (succeeded.state, succeeded.content["ErrorCode"], succeeded.content["Progress"]) == (
        "Success",
        0,
        100,
    )
    assert (failed.state, failed.content["ErrorCode"]) == ("Failure", LOST_JOB_ERROR_CODE)
    assert succeeded.content["CompletionTime"] == orthanc_timestamp(event_time)
    assert "only the outcome" in succeeded.content["ErrorDetails"]
    assert succeeded.history_only and registry.is_history_only(succeeded)
    assert {j.id for j in registry.list_jobs()} == {JOB_B, JOB_C}
    assert registry.apply_terminal_event(server, "../../x", JobState.SUCCESS) is None


def test_the_owners_word_replaces_a_presumption_even_if_older(registry: Registry, clock: Clock) -> None:
    """A job presumed lost (its server no longer listed it) whose real end arrives late, from events the
    plugin kept while the job-service was away: the owner's JSON wins, whatever its Timestamp."""
    server = register(registry)
    registry.apply_snapshot(server, job(JOB_A, "Pending", Timestamp="20261128T100001.000000"))
    clock.now += 10
    registry.reconcile(server, [], started_at=clock.now)
    assert registry.get_job(JOB_A).presumed
    assert registry.get_job(JOB_A).state == "Failure"

    registry.apply_snapshot(server, job(JOB_A, "Success", Timestamp="20261128T100002.000000"))

    known = registry.get_job(JOB_A)
    assert (known.state, known.presumed, known.content["ErrorCode"]) == ("Success", False, 0)
    # Once it is the owner's word again, an older snapshot does not go back.
    registry.apply_snapshot(server, job(JOB_A, "Running", Timestamp="20261128T100001.500000"))
    assert registry.get_job(JOB_A).state == "Success"


def test_an_end_event_without_json_replaces_a_presumption_cleanly(registry: Registry) -> None:
    from orthanc_jobs.core.model import JobState

    server = register(registry)
    registry.apply_snapshot(server, job(JOB_A, "Running"))
    registry.reconcile(server, [], started_at=registry._clock() + 1)
    assert registry.get_job(JOB_A).content["ErrorCode"] == LOST_JOB_ERROR_CODE

    registry.apply_terminal_event(server, JOB_A, JobState.SUCCESS)

    known = registry.get_job(JOB_A)
    assert (known.state, known.content["ErrorCode"], known.content["ErrorDescription"]) == (
        "Success",
        0,
        "Success",
    )
    assert not known.presumed


def test_a_server_that_said_it_stopped_cannot_bring_its_jobs_back_to_life(registry: Registry) -> None:
    server = register(registry)
    registry.apply_snapshot(server, job(JOB_A, "Running", Timestamp="20261128T100001.000000"))
    registry.mark_server_stopped(server)
    assert registry.get_job(JOB_A).state == "Failure"

    # A poll answered during Orthanc's shutdown, after its plugin's ORTHANC_STOPPED:
    registry.apply_snapshot(server, job(JOB_A, "Running", Timestamp="20261128T100009.000000"))

    assert registry.get_job(JOB_A).state == "Failure"


def test_a_restart_fails_the_unfinished_jobs_of_the_old_process(registry: Registry) -> None:
    old = register(registry, "orthanc-1", "inc-1")
    registry.apply_snapshot(old, job(JOB_A, "Running"))
    registry.apply_snapshot(old, job(JOB_B, "Success"))
    new = register(registry, "orthanc-1", "inc-2")
    lost = registry.get_job(JOB_A)
    assert lost.state == "Failure"
    assert lost.content["ErrorCode"] == LOST_JOB_ERROR_CODE
    assert "orthanc-1" in lost.content["ErrorDescription"] and "restarted" in lost.content["ErrorDescription"]
    assert "CompletionTime" in lost.content
    assert registry.get_job(JOB_B).state == "Success"
    assert registry.owner(lost) is None  # the new process does not have it
    assert registry.server_status(new) is ServerStatus.ALIVE


def test_a_stopped_server_fails_its_unfinished_jobs(registry: Registry) -> None:
    server = register(registry)
    registry.apply_snapshot(server, job(JOB_A, "Pending"))
    registry.mark_server_stopped(server)
    assert registry.server_status(server) is ServerStatus.STOPPED
    assert "stopped" in registry.get_job(JOB_A).content["ErrorDescription"]
    assert registry.live_servers() == []


def test_liveness_follows_silence(registry: Registry, clock: Clock) -> None:
    server = register(registry)
    clock.now += 9.9
    registry.check_liveness()
    assert registry.server_status(server) is ServerStatus.ALIVE
    clock.now += 0.2
    registry.check_liveness()
    assert registry.server_status(server) is ServerStatus.NOT_RESPONDING
    clock.now += 50
    registry.check_liveness()
    assert registry.server_status(server) is ServerStatus.STOPPED
    registry.mark_seen(server)
    assert registry.server_status(server) is ServerStatus.ALIVE


def test_reconcile_fails_only_jobs_known_before_the_listing(registry: Registry, clock: Clock) -> None:
    server = register(registry)
    registry.apply_snapshot(server, job(JOB_A, "Running"))
    started_at = clock.now + 1
    clock.now += 2
    registry.apply_snapshot(server, job(JOB_B, "Pending"))  # arrived by event while the listing ran
    registry.reconcile(server, [job(JOB_C, "Success")], started_at)
    assert registry.get_job(JOB_A).state == "Failure"
    assert "no longer knows" in registry.get_job(JOB_A).content["ErrorDescription"]
    assert registry.get_job(JOB_B).state == "Pending"
    assert registry.get_job(JOB_C).state == "Success"


def test_removed_jobs_leave_every_index(registry: Registry) -> None:
    server = register(registry)
    registry.apply_snapshot(server, job(JOB_A, "Success"))
    registry.remove_job(JOB_A)
    assert registry.list_jobs() == []
    assert registry.list_jobs(JobQuery(states=frozenset({"Success"}))) == []
    assert registry.job_counts(server)["Success"] == 0


def test_orthanc_timestamps_have_orthancs_format() -> None:
    assert orthanc_timestamp(0) == "19700101T000000.000000"


def test_a_silent_server_is_stopped_once_and_loses_its_unfinished_jobs(
    registry: Registry, clock: Clock
) -> None:
    server = register(registry)
    registry.apply_snapshot(server, job(JOB_A, "Running"))
    registry.apply_snapshot(server, job(JOB_B, "Success"))
    assert registry.check_liveness() == [(server, ServerStatus.ALIVE)]
    clock.now += 11
    assert registry.check_liveness() == [(server, ServerStatus.NOT_RESPONDING)]
    assert registry.get_job(JOB_A).state == "Running"  # not responding is not lost (SIGSTOP, a long GC...)
    assert registry.check_liveness() == []
    clock.now += 50
    assert registry.check_liveness() == [(server, ServerStatus.STOPPED)]
    lost = registry.get_job(JOB_A)
    assert lost.state == "Failure"
    assert "silent for 61 s" in lost.content["ErrorDescription"]
    assert registry.get_job(JOB_B).state == "Success"
    registry.mark_seen(server)  # it was only frozen: it comes back
    assert registry.check_liveness() == [(server, ServerStatus.ALIVE)]


def test_forgotten_jobs_stay_as_history(registry: Registry, clock: Clock) -> None:
    server = register(registry)
    registry.apply_snapshot(server, job(JOB_A, "Success"))
    clock.now += 1
    registry.reconcile(server, [], clock.now)
    kept = registry.get_job(JOB_A)
    assert kept.state == "Success"
    assert kept.history_only and registry.is_history_only(kept)
    assert [j.id for j in registry.list_jobs()] == [JOB_A]


def test_history_is_pruned_by_age_and_count_but_not_what_servers_hold(
    registry: Registry, clock: Clock
) -> None:
    server = register(registry)
    ids = [f"{n:08d}-0000-0000-0000-000000000000" for n in range(5)]
    for n, job_id in enumerate(ids):
        registry.apply_snapshot(server, job(job_id, "Success", created=f"20261128T10000{n}.000000"))
        clock.now += 1
    registry.apply_snapshot(server, job(JOB_A, "Success", created="20261128T100009.000000"))  # still held
    registry.reconcile(server, [job(JOB_A, "Success", created="20261128T100009.000000")], clock.now)
    assert registry.prune_history(max_age=3600, max_jobs=4) == 2  # the two oldest of the history
    assert sorted(j.id for j in registry.list_jobs()) == sorted([*ids[2:], JOB_A])
    clock.now += 3601
    assert registry.prune_history(max_age=3600, max_jobs=100) == 3
    assert [j.id for j in registry.list_jobs()] == [JOB_A]


def test_lost_jobs_can_be_hidden_from_listings_after_a_delay(clock: Clock) -> None:
    registry = Registry(
        SqliteStore(":memory:"), not_responding_after=10, stopped_after=60, hide_lost_after=30, clock=clock
    )
    server = register(registry)
    registry.apply_snapshot(server, job(JOB_A, "Running"))
    registry.mark_server_stopped(server)
    assert [j.id for j in registry.list_jobs()] == [JOB_A]
    clock.now += 31
    assert registry.list_jobs() == []
    assert registry.get_job(JOB_A).state == "Failure"  # still readable by id


def test_the_store_brings_everything_back_after_a_restart(tmp_path, clock: Clock) -> None:
    path = str(tmp_path / "history.sqlite3")
    store = SqliteStore(path)
    registry = Registry(store, not_responding_after=10, stopped_after=60, clock=clock)
    server = register(registry)
    registry.apply_snapshot(server, job(JOB_A, "Success", Content={"ArchiveSize": "10"}))
    registry.apply_snapshot(server, job(JOB_B, "Running"))
    registry.apply_snapshot(server, job(JOB_C, "Running"))
    registry.remove_job(JOB_C)
    registry.reconcile(server, [job(JOB_B, "Running")], clock.now + 1)
    store.close()

    again = Registry(SqliteStore(path), not_responding_after=10, stopped_after=60, clock=clock)
    restored = again.server_by_incarnation("inc-1")
    assert restored is not None and (restored.name, restored.token) == ("orthanc-1", "Bearer t")
    assert again.server_status(restored) is ServerStatus.ALIVE
    assert [j.id for j in again.list_jobs()] == [JOB_A, JOB_B]
    assert again.get_job(JOB_A).content["Content"] == {"ArchiveSize": "10"}
    assert again.get_job(JOB_A).history_only
    assert again.get_job(JOB_B).state == "Running"
    assert again.list_jobs(JobQuery(states=frozenset({"Running"})))[0].id == JOB_B


def test_two_processes_sharing_one_url_are_reported(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    register(registry, "orthanc-1", "inc-a")
    register(registry, "orthanc-1", "inc-b")  # a restart, as far as anyone can tell
    assert "evict each other" not in caplog.text
    register(registry, "orthanc-1", "inc-a")  # the first one is still there: they share the URL
    assert "evict each other" in caplog.text


def test_a_late_poll_answer_cannot_undo_an_end_known_from_its_event(registry: Registry, clock: Clock) -> None:
    """A poll read before the job ended, answered after its end event (without JSON) was applied."""
    from orthanc_jobs.core.model import JobState

    server = register(registry)
    registry.apply_snapshot(server, job(JOB_A, "Running", Timestamp="20261128T100001.000000"))
    ended = datetime(2026, 11, 28, 10, 0, 5, tzinfo=UTC).timestamp()
    registry.apply_terminal_event(server, JOB_A, JobState.SUCCESS, ended)

    registry.apply_snapshot(server, job(JOB_A, "Running", Timestamp="20261128T100003.000000"))

    assert registry.get_job(JOB_A).state == "Success"
    assert registry.get_job(JOB_A).timestamp == "20261128T100005.000000"


def test_a_gap_is_kept_across_restarts_of_the_service_and_of_the_server(tmp_path, clock: Clock) -> None:
    path = str(tmp_path / "history.sqlite3")
    store = SqliteStore(path)
    registry = Registry(store, not_responding_after=10, stopped_after=60, clock=clock)
    server = register(registry, "orthanc-1", "inc-1")
    gap = {"DroppedEvents": 5, "DroppedJobJson": 2, "First": 1.0, "Last": 2.0}
    registry.report_gap(server, gap)
    store.flush()

    again = Registry(SqliteStore(path), not_responding_after=10, stopped_after=60, clock=clock)
    assert again.server_by_url(server.url).gap == gap
    # The server restarts: the gap of its previous process stays shown until the new one reports its own.
    restarted = register(again, "orthanc-1", "inc-2")
    assert restarted.gap == gap
    newer = dict(gap, DroppedEvents=1)
    again.report_gap(restarted, newer)
    assert again.server_by_url(server.url).gap == newer


def test_a_new_process_at_a_url_cannot_rewrite_the_jobs_of_the_previous_one(registry: Registry) -> None:
    """A forged registration (or a restart) at orthanc-1's URL: the new incarnation starts with no job, so a
    snapshot of an old job from it, even newer, is ignored. Before, a forged old snapshot took a job from
    Success back to Running."""
    old = register(registry, "orthanc-1", "inc-1")
    registry.apply_snapshot(old, job(JOB_A, "Success", Timestamp="20261128T100005.000000"))
    forged = register(registry, "orthanc-1", "forged")

    registry.apply_snapshot(forged, job(JOB_A, "Running", Timestamp="20261128T100009.000000"))

    known = registry.get_job(JOB_A)
    assert (known.state, known.incarnation) == ("Success", "inc-1")


def test_what_another_replica_wrote_is_installed_unless_older_and_not_told_again(registry: Registry) -> None:
    server = register(registry)
    told: list[object] = []
    registry.subscribers.append(told.append)
    newer = registry.apply_snapshot(server, job(JOB_A, "Success", Timestamp="20261128T100009.000000"))
    assert newer is not None
    told.clear()
    older = Job.from_content(
        job(JOB_A, "Running", Timestamp="20261128T100005.000000"),
        server_url=server.url,
        incarnation=server.incarnation,
        first_seen=0.0,
    )

    assert registry.install_job(older) is False
    assert registry.get_job(JOB_A) is newer
    later = Job.from_content(
        job(JOB_A, "Failure", Timestamp="20261128T100010.000000"),
        server_url=server.url,
        incarnation=server.incarnation,
        first_seen=0.0,
    )
    assert registry.install_job(later) is True
    assert registry.get_job(JOB_A) is later and [
        j.id for j in registry.list_jobs(JobQuery(states=frozenset({"Failure"})))
    ]
    assert told == []  # written and streamed by the replica that received it


def test_a_new_process_heard_of_through_another_replica_fails_nothing_here(
    registry: Registry, clock: Clock
) -> None:
    old = register(registry, incarnation="inc-1")
    registry.apply_snapshot(old, job(JOB_A))
    new = Server(
        url=old.url,
        name=old.name,
        incarnation="inc-2",
        token="t",
        registered_at=clock.now + 1,
        last_seen=clock.now + 1,
    )

    assert registry.install_server(new) is True

    assert registry.get_job(JOB_A).state == "Running"  # type: ignore[union-attr]  (the other replica fails it)
    assert registry.server_by_incarnation("inc-2") is new and registry.server_by_incarnation("inc-1") is None
    assert registry.install_server(old) is False  # its row, written late, changes nothing


def test_a_replica_that_does_not_lead_shows_silence_and_only_the_leader_fails_the_jobs(clock: Clock) -> None:
    leading = [False]
    registry = Registry(
        SqliteStore(":memory:"),
        not_responding_after=10,
        stopped_after=60,
        clock=clock,
        leading=lambda: leading[0],
    )
    server = register(registry)
    registry.apply_snapshot(server, job(JOB_A))
    clock.now += 61

    registry.check_liveness()
    assert registry.server_status(server) is ServerStatus.STOPPED
    assert registry.get_job(JOB_A).state == "Running"  # type: ignore[union-attr]

    leading[0] = True  # it leads now: the jobs of a server it had seen stop are failed, once
    registry.check_liveness()
    registry.check_liveness()
    failed = registry.get_job(JOB_A)
    assert failed is not None and failed.state == "Failure"
    assert "stopped answering (silent for 61 s)" in failed.content["ErrorDescription"]


def test_a_finished_job_is_kept_serialised_and_a_poll_that_finds_nothing_new_changes_nothing(
    registry: Registry,
) -> None:
    """A finished job no longer changes: only its JSON bytes are kept (issue #14, memory); a resynchronisation
    that reads it again with a newer Timestamp and nothing else new is no change, anything else is one."""
    server = register(registry)
    changes: list[Any] = []
    registry.subscribers.append(changes.append)
    running = registry.apply_snapshot(server, job(JOB_A, "Running"))
    assert running is not None and running.parsed is not None  # still changing: kept parsed
    done = registry.apply_snapshot(server, job(JOB_A, "Success", Timestamp="20261128T100002.000000"))
    assert done is not None and done.parsed is None
    assert done.content == job(JOB_A, "Success", Timestamp="20261128T100002.000000")
    changes.clear()
    again = registry.apply_snapshot(server, job(JOB_A, "Success", Timestamp="20261128T100009.000000"))
    assert again is done and changes == []
    moved = registry.apply_snapshot(
        server, job(JOB_A, "Success", Timestamp="20261128T100010.000000", Progress=100)
    )
    assert moved is not done and moved is not None and moved.content["Progress"] == 100
    assert len(changes) == 1


def test_pages_of_listings_and_counts_follow_every_change(registry: Registry, clock: Clock) -> None:
    """page_jobs, job_counts, tally and finished_since read indexes kept in step with each change (issue
    #14: a million jobs); they must say what a reading of every job says, whatever happened."""
    import random

    generator = random.Random(14)
    servers = [register(registry, f"orthanc-{n}", f"inc-{n}") for n in (1, 2, 3)]
    ids = [f"{n:08d}-1111-4111-8111-111111111111" for n in range(120)]
    states = ["Pending", "Running", "Success", "Failure", "Paused"]
    for step in range(600):
        clock.now += 1
        job_id = generator.choice(ids)
        existing = registry.get_job(job_id)
        server = servers[int(job_id[:8]) % 3]
        if existing is not None and generator.random() < 0.1:
            registry.remove_job(job_id)
            continue
        created = f"20261128T{int(job_id[:8]) * 7 % 100:06d}.000000"
        registry.apply_snapshot(
            server,
            job(
                job_id,
                generator.choice(states),
                created=created,
                Type=generator.choice(["Archive", "DicomModalityStore", "Media"]),
                Timestamp=f"20261128T{step:06d}.5",
            ),
        )
    every = registry.list_jobs()
    assert len(every) > 50
    assert every == sorted(registry.all_jobs(), key=lambda each: each.order_key)
    for _ in range(200):
        chosen_states = generator.choice([None, frozenset(generator.sample(states, generator.randint(1, 3)))])
        chosen_types = generator.choice(
            [None, frozenset({"archive"}), frozenset({"media", "dicommodalitystore"})]
        )
        chosen_servers = generator.choice(
            [None, frozenset({servers[0].url}), frozenset(s.url for s in servers[1:])]
        )
        offset, limit = generator.randint(0, 40), generator.choice([None, 0, 5, 25])
        query = JobQuery(states=chosen_states, types=chosen_types, server_urls=chosen_servers)
        expected = registry.list_jobs(query)
        total, page = registry.page_jobs(query, offset=offset, limit=limit)
        assert (total, page) == (len(expected), expected[offset : None if limit is None else offset + limit])
    for server in servers:
        counted = {state: 0 for state in [*states, "Retry"]}
        for each in every:
            if each.server_url == server.url:
                counted[each.state] += 1
        assert registry.job_counts(server) == counted
    assert sum(count for *_, count in registry.tally()) == len(every)
    by_server = registry.unfinished_by_server()
    for server in servers:
        assert sorted(j.id for j in by_server.get(server.url, [])) == sorted(
            j.id for j in registry.unfinished_jobs(server)
        )
    since = clock.now - 200
    assert {j.id for j in registry.finished_since(since)} == {
        j.id for j in every if j.finished_at is not None and j.finished_at >= since
    }


def test_pages_of_searches_say_what_judging_every_job_says(registry: Registry, clock: Clock) -> None:
    """Ids and creation times narrow the sorted indexes, alone or with states, types and servers; the
    other criteria are judged job by job: every page is the slice of what matches among all jobs."""
    import random

    generator = random.Random(15)
    servers = [register(registry, f"orthanc-{n}", f"inc-{n}") for n in (1, 2)]
    studies = [f"{n:08x}-26f93bde-c81ab0d7-bffaf2cb-a4d0bdd0" for n in range(4)]
    ids = [f"{n:08d}-1111-4111-8111-111111111111" for n in range(150)]
    for number, job_id in enumerate(ids):
        clock.now += 1
        state = generator.choice(["Running", "Success", "Failure"])
        extra = {"CompletionTime": f"20261129T{number:06d}.000000"} if state != "Running" else {}
        registry.apply_snapshot(
            servers[number % 2],
            job(
                job_id,
                state,
                created=f"20261128T{generator.randrange(100):06d}.{number:06d}",
                Type=generator.choice(["Archive", "Media"]),
                Content={
                    "Description": generator.choice(["Ward 7", "ward 9", "Night"]),
                    "Resources": [generator.choice(studies)],
                },
                **extra,
            ),
        )
    every = registry.list_jobs()
    found = 0
    for _ in range(300):
        query = JobQuery(
            states=generator.choice([None, frozenset({"Success"}), frozenset({"Running", "Failure"})]),
            types=generator.choice([None, frozenset({"archive"})]),
            server_urls=generator.choice([None, frozenset({servers[1].url})]),
            ids=generator.choice([None, frozenset(generator.sample(ids, 20)), frozenset({JOB_A})]),
            created=generator.choice(
                [
                    None,
                    TimeRange.between("20261128T000010", "20261128T000050"),
                    TimeRange.between(None, "20261128T000020"),
                ]
            ),
            completed=generator.choice([None, TimeRange.between("20261129T000100", None)]),
            text=generator.choice([None, TextSearch("WARD"), TextSearch("night")]),
            resource=generator.choice([None, ResourceSearch(studies[1])]),
        )
        offset, limit = generator.randint(0, 30), generator.choice([None, 0, 7, 40])
        expected = [each for each in every if query.matches(each)]
        found += bool(expected)
        assert registry.list_jobs(query) == expected
        total, page = registry.page_jobs(query, offset=offset, limit=limit)
        assert (total, page) == (len(expected), expected[offset : None if limit is None else offset + limit])
    assert found > 50  # the queries find something, often


def test_searches_skip_the_jobs_hidden_after_a_while(clock: Clock) -> None:
    registry = Registry(
        SqliteStore(":memory:"), not_responding_after=10, stopped_after=60, hide_lost_after=100, clock=clock
    )
    server = register(registry)
    registry.apply_snapshot(server, job(JOB_A, "Success", Content={"Description": "kept"}))
    registry.apply_snapshot(server, job(JOB_B, "Running", Content={"Description": "kept"}))
    registry.mark_server_stopped(server)  # both jobs are now its gone process's, B lost
    clock.now += 101
    assert registry.page_jobs(JobQuery(text=TextSearch("kept"))) == (0, [])
    assert registry.page_jobs(JobQuery(ids=frozenset({JOB_A}))) == (0, [])


def test_a_long_search_pauses_and_judges_each_job_as_it_is_when_read(registry: Registry) -> None:
    server = register(registry)
    ids = [f"{n:08d}-1111-4111-8111-111111111111" for n in range(6)]
    for number, job_id in enumerate(ids):
        registry.apply_snapshot(
            server, job(job_id, created=f"20261128T10000{number}.000000", Content={"Description": "ward"})
        )
    registry.judged_per_step = 2
    steps = registry.page_steps(JobQuery(states=frozenset({"Running"}), text=TextSearch("WARD")), limit=3)
    assert next(steps) is None  # two judged: both match
    registry.remove_job(ids[2])
    registry.apply_snapshot(
        server, job(ids[3], "Success", created="20261128T100003.000000", Timestamp="20261128T200000.000000")
    )
    assert next(steps) is None and next(steps) is None  # six judged
    assert next(steps) == (4, [registry.get_job(job_id) for job_id in (ids[0], ids[1], ids[4])])
    # Listings that read an index without judging jobs one by one do not pause.
    running = JobQuery(states=frozenset({"Running"}))
    assert list(registry.page_steps(running)) == [(4, registry.list_jobs(running))]

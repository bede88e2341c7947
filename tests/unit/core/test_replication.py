"""Replicas on one real PostgreSQL: each with its own registry, store, event log and lease, as the service
builds them (api/app.py), in one process."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from orthanc_jobs.core.eventlog import EventLog
from orthanc_jobs.core.model import Job, ServerStatus
from orthanc_jobs.core.registry import Registry
from orthanc_jobs.core.replication import Leadership, Replication
from orthanc_jobs.core.store.postgres import PostgresStore
from orthanc_jobs.core.wire import frame_for

URL = "http://127.0.0.1:8001"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class Replica:
    store: PostgresStore
    registry: Registry
    events: EventLog
    leadership: Leadership
    replication: Replication
    new_servers: list[str]
    #: Jobs installed from the others' writes: (id, state, state before), as webhooks are told them.
    installed: list[tuple[str, str, str | None]]

    async def write(self) -> None:
        await asyncio.to_thread(self.store.write, self.store.take_pending())


def job(job_id: str, state: str = "Running", stamp: str = "20261128T100001.000000", **extra: Any) -> dict:
    return {
        "ID": job_id,
        "Type": "Archive",
        "State": state,
        "Progress": 100 if state == "Success" else 50,
        "CreationTime": "20261128T100000.000000",
        "Timestamp": stamp,
        "Priority": 0,
        "EffectiveRuntime": 1.0,
        "ErrorCode": 0,
        "ErrorDescription": "Success",
        "Content": {},
        **extra,
    }


@pytest.fixture
async def replicas(postgresql_url: str) -> AsyncIterator[Callable[..., Replica]]:
    schema = f"test_{uuid.uuid4().hex[:12]}"
    started: list[Replica] = []

    def start(name: str, clock: Callable[[], float] = time.time, lease_seconds: float = 2.0) -> Replica:
        store = PostgresStore(postgresql_url, schema, replica=name)
        leadership = Leadership(store, name, seconds=lease_seconds, margin=0.5)
        registry = Registry(
            store, not_responding_after=10, stopped_after=60, clock=clock, leading=leadership.is_leader
        )
        events = EventLog()
        store.framer = lambda change: frame_for(registry, change)
        new_servers: list[str] = []
        installed: list[tuple[str, str, str | None]] = []
        replication = Replication(
            store,
            registry,
            events,
            leadership,
            on_new_server=lambda server: new_servers.append(server.name),
            on_installed_job=lambda job, previous: installed.append(
                (job.id, job.state, previous.state if previous is not None else None)
            ),
        )
        replication.start()
        replica = Replica(store, registry, events, leadership, replication, new_servers, installed)
        started.append(replica)
        return replica

    yield start
    for replica in started:
        await replica.replication.stop()
        replica.store.close()


async def settled(postgresql_url: str, *replicas: Replica) -> None:
    """Until every replica has read the whole change log."""
    schema = replicas[0].store.schema
    with psycopg.connect(postgresql_url) as db:
        row = db.execute(
            f"SELECT GREATEST(COALESCE(max(id), 0), (SELECT trimmed_through FROM {schema}.log_state)) "
            f"FROM {schema}.changes"
        ).fetchone()
    last = row[0] if row else 0
    for replica in replicas:
        assert await replica.replication.reached(last, 5), (
            f"{replica.store.replica} at {replica.replication.position}"
        )


async def test_what_one_replica_receives_every_replica_answers_and_streams_the_same(
    replicas: Callable[..., Replica], postgresql_url: str
) -> None:
    a, b = replicas("a"), replicas("b")
    server = a.registry.register_server(name="orthanc-1", url=URL, incarnation="inc-1", token="t")
    job_id = str(uuid.uuid4())
    a.registry.apply_snapshot(server, job(job_id))
    await a.write()
    a.registry.apply_snapshot(server, job(job_id, "Success", "20261128T100002.000000"))
    await a.write()

    await settled(postgresql_url, a, b)

    copy = b.registry.get_job(job_id)
    assert copy is not None and copy.state == "Success" and copy.server_url == URL
    owner = b.registry.server_by_url(URL)
    assert owner is not None and b.registry.owner(copy) is owner and owner.incarnation == "inc-1"
    assert b.new_servers == ["orthanc-1"]
    # The same events, under the same ids, on both (a's own come back from the log too).
    seen_a = [(e.id, e.kind, e.data) for e in a.events.since(0) or []]
    seen_b = [(e.id, e.kind, e.data) for e in b.events.since(0) or []]
    assert seen_a == seen_b
    assert [kind for _, kind, _ in seen_b] == ["job", "server", "job"]
    assert b'"State":"Success"' in seen_b[-1][2]
    # Told of the others' jobs only, with the state before (a leader's webhooks alert for them).
    assert b.installed == [(job_id, "Running", None), (job_id, "Success", "Running")] and a.installed == []


async def test_an_older_state_written_late_never_replaces_a_newer_one(
    replicas: Callable[..., Replica], postgresql_url: str
) -> None:
    a, b = replicas("a"), replicas("b")
    server = a.registry.register_server(name="orthanc-1", url=URL, incarnation="inc-1", token="t")
    job_id = str(uuid.uuid4())
    a.registry.apply_snapshot(server, job(job_id, "Success", "20261128T100009.000000"))
    await a.write()
    await settled(postgresql_url, a, b)
    # b noted an older state (a plugin's batch sent to it before), written after a's newer one.
    b.store.save_job(
        Job.from_content(
            job(job_id, "Running", "20261128T100005.000000"),
            server_url=URL,
            incarnation="inc-1",
            first_seen=0.0,
        )
    )
    await b.write()
    await settled(postgresql_url, a, b)

    assert a.registry.get_job(job_id).state == "Success"  # type: ignore[union-attr]
    _, loaded = PostgresStore(postgresql_url, a.store.schema).load()
    assert [j.state for j in loaded if j.id == job_id] == ["Success"]
    # Nor streamed after the newer one: both replicas stream the same, the job's last event is Success.
    streamed = [[(e.id, e.kind, e.data) for e in r.events.since(0) or []] for r in (a, b)]
    assert streamed[0] == streamed[1]
    assert [data for _, kind, data in streamed[0] if kind == "job"][-1].count(b'"State":"Success"') == 1


async def test_the_owners_own_end_replaces_a_presumed_one_everywhere_whatever_its_timestamp(
    replicas: Callable[..., Replica], postgresql_url: str
) -> None:
    clock = Clock()
    a = replicas("a", clock)
    await a.leadership.renew()
    b = replicas("b", clock)
    assert a.leadership.is_leader()
    server = a.registry.register_server(name="orthanc-1", url=URL, incarnation="inc-1", token="t")
    job_id = str(uuid.uuid4())
    a.registry.apply_snapshot(server, job(job_id))
    clock.now += 61
    a.registry.check_liveness()  # the leader presumes it lost (its server was only frozen)
    assert a.registry.get_job(job_id).presumed  # type: ignore[union-attr]
    await a.write()
    await settled(postgresql_url, a, b)
    # The server comes back; its plugin sends the job's real end, stamped before the presumed failure.
    b_server = b.registry.server_by_url(URL)
    assert b_server is not None
    b.registry.mark_seen(b_server)
    b.registry.apply_snapshot(b_server, job(job_id, "Success", "20261128T100002.000000"))
    await b.write()
    await settled(postgresql_url, a, b)

    assert [r.registry.get_job(job_id).state for r in (a, b)] == ["Success", "Success"]  # type: ignore[union-attr]
    _, loaded = PostgresStore(postgresql_url, a.store.schema).load()
    assert [j.state for j in loaded if j.id == job_id] == ["Success"]


async def test_one_replica_leads_and_another_takes_over_when_it_lets_go_or_dies(postgresql_url: str) -> None:
    schema = f"test_{uuid.uuid4().hex[:12]}"
    stores = [PostgresStore(postgresql_url, schema, replica=name) for name in ("a", "b")]
    a, b = (Leadership(store, store.replica, seconds=1.5, margin=0.5) for store in stores)
    try:
        await a.renew()
        await b.renew()
        assert (a.is_leader(), b.is_leader(), a.term) == (True, False, 1)

        await a.release()  # a replica that stops
        await b.renew()
        assert (a.is_leader(), b.is_leader(), b.term) == (False, True, 2)

        # b dies without letting go (no more renewals): a takes over once the lease has ended, not before.
        await a.renew()
        assert not a.is_leader()
        await asyncio.sleep(1.6)
        assert not b.is_leader()  # b stopped deciding before its lease ended (the margin)
        await a.renew()
        assert a.is_leader() and a.term == 3
    finally:
        for store in stores:
            store.close()


async def test_only_the_leader_fails_the_jobs_of_a_silent_server_and_only_once(
    replicas: Callable[..., Replica], postgresql_url: str
) -> None:
    clock = Clock()
    a, b = replicas("a", clock), replicas("b", clock)
    await a.leadership.renew()
    await b.leadership.renew()
    leader, follower = (a, b) if a.leadership.is_leader() else (b, a)
    server = follower.registry.register_server(name="orthanc-1", url=URL, incarnation="inc-1", token="t")
    job_id = str(uuid.uuid4())
    follower.registry.apply_snapshot(server, job(job_id))
    await follower.write()
    await settled(postgresql_url, a, b)

    clock.now += 61
    follower.registry.check_liveness()
    assert follower.registry.get_job(job_id).state == "Running"  # type: ignore[union-attr]
    follower_server = follower.registry.server_by_url(URL)
    assert follower_server is not None and follower_server.status is ServerStatus.STOPPED
    leader.registry.check_liveness()
    leader.registry.check_liveness()
    await leader.write()
    await settled(postgresql_url, a, b)

    failed = follower.registry.get_job(job_id)
    assert failed is not None and failed.state == "Failure"
    assert "stopped answering" in failed.content["ErrorDescription"]
    with psycopg.connect(postgresql_url) as db:
        writes = db.execute(
            f"SELECT replica, content FROM {a.store.schema}.changes WHERE key = %s ORDER BY id", (job_id,)
        ).fetchall()
    assert [(replica, b'"Failure"' in bytes(content)) for replica, content in writes] == [
        (follower.store.replica, False),
        (leader.store.replica, True),
    ]


async def test_a_stream_resumes_on_another_replica_with_exactly_what_it_missed(
    replicas: Callable[..., Replica], postgresql_url: str
) -> None:
    a, b = replicas("a"), replicas("b")
    server = a.registry.register_server(name="orthanc-1", url=URL, incarnation="inc-1", token="t")
    ids = [str(uuid.uuid4()) for _ in range(5)]
    a.registry.apply_snapshot(server, job(ids[0]))
    await a.write()
    await settled(postgresql_url, a, b)
    last_seen_on_a = a.events.last_id
    for job_id in ids[1:]:
        a.registry.apply_snapshot(server, job(job_id))
        await a.write()
    await settled(postgresql_url, a, b)

    missed = b.events.since(last_seen_on_a)

    assert missed is not None
    assert [e.id for e in missed] == [e.id for e in a.events.since(last_seen_on_a) or []]
    assert [e.data for e in missed] == [e.data for e in a.events.since(last_seen_on_a) or []]
    assert len(missed) == 4 and all(e.kind == "job" for e in missed)


async def test_a_replica_started_later_has_the_registry_and_the_recent_events(
    replicas: Callable[..., Replica], postgresql_url: str
) -> None:
    a = replicas("a")
    server = a.registry.register_server(name="orthanc-1", url=URL, incarnation="inc-1", token="t")
    job_id = str(uuid.uuid4())
    a.registry.apply_snapshot(server, job(job_id))
    await a.write()
    await settled(postgresql_url, a)

    c = replicas("c")

    assert c.registry.get_job(job_id) is not None
    assert [(e.id, e.data) for e in c.events.since(0) or []] == [
        (e.id, e.data) for e in a.events.since(0) or []
    ]
    assert c.events.since(a.events.last_id) == []


async def test_a_replica_away_longer_than_the_log_keeps_reads_the_tables_again(
    replicas: Callable[..., Replica], postgresql_url: str
) -> None:
    a, b = replicas("a"), replicas("b")
    await b.replication.stop()  # away
    server = a.registry.register_server(name="orthanc-1", url=URL, incarnation="inc-1", token="t")
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for job_id in ids:
        a.registry.apply_snapshot(server, job(job_id))
        await a.write()
    assert await asyncio.to_thread(a.store.trim_log, 1) >= 3

    a.registry.remove_job(ids[0])  # pruned meanwhile
    await a.write()
    assert await asyncio.to_thread(a.store.trim_log, 0) >= 1
    stream = b.events.subscribe()

    b.replication.start()  # back
    await settled(postgresql_url, a, b)

    assert b.registry.get_job(ids[0]) is None
    assert all(b.registry.get_job(job_id) is not None for job_id in ids[1:])
    assert stream.get_nowait() is None  # its client reconnects, and reloads: what it missed is gone


async def test_events_that_change_nothing_kept_reach_every_replicas_stream(
    replicas: Callable[..., Replica], postgresql_url: str
) -> None:
    """A job told stuck and an action's progress are written to the change log as frames alone: the other
    replica streams them under the same ids, and keeps nothing more."""
    from orthanc_jobs.core.changes import ActionProgress, JobStuck

    a, b = replicas("a"), replicas("b")
    server = a.registry.register_server(name="orthanc-1", url=URL, incarnation="inc-1", token="t")
    job_id = str(uuid.uuid4())
    running = a.registry.apply_snapshot(server, job(job_id))
    assert running is not None
    await a.write()
    for subscriber in a.registry.subscribers:
        subscriber(JobStuck(running, stuck=True))
    a.registry.announce(ActionProgress("action-1", b'{"ID":"action-1","State":"Done"}'))
    await a.write()
    await settled(postgresql_url, a, b)
    seen_a = [(e.id, e.kind, e.data) for e in a.events.since(0) or []]
    seen_b = [(e.id, e.kind, e.data) for e in b.events.since(0) or []]
    assert seen_a == seen_b
    assert [kind for _, kind, _ in seen_b] == ["job", "server", "job", "action"]
    assert seen_b[-1][2] == b'{"ID":"action-1","State":"Done"}'
    assert len(b.registry) == 1

"""The housekeeper's writes of the history: grouped, never lost when they fail, never out of order."""

import asyncio
import logging
import sqlite3
import threading
from pathlib import Path

import pytest

from orthanc_jobs.core.housekeeping import Housekeeper
from orthanc_jobs.core.model import Job, ServerStatus
from orthanc_jobs.core.registry import Registry
from orthanc_jobs.core.store import SqliteStore
from orthanc_jobs.core.store.base import Pending


def a_job(number: int, state: str = "Success") -> Job:
    job_id = f"{number:08d}-1111-1111-1111-111111111111"
    return Job.from_content(
        {"ID": job_id, "State": state}, server_url="http://o", incarnation="i", first_seen=1
    )


class Recording(SqliteStore):
    """A real store whose writes can fail, or wait for a signal, and are counted."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.writes: list[set[str]] = []
        self.failing = 0
        self.hold = threading.Event()
        self.hold.set()

    def write(self, pending: Pending) -> None:
        self.hold.wait(5)
        if self.failing:
            self.failing -= 1
            raise sqlite3.OperationalError("database or disk is full")
        self.writes.append(set(pending.jobs))
        super().write(pending)


@pytest.fixture
def store(tmp_path: Path) -> Recording:
    return Recording(str(tmp_path / "history.sqlite3"))


def housekeeper(store: Recording) -> Housekeeper:
    registry = Registry(store, not_responding_after=10, stopped_after=60)
    return Housekeeper(registry, store, liveness_interval=1, history_max_age=60, history_max_jobs=100)


def rows(store: Recording) -> dict[str, str]:
    with sqlite3.connect(store._path) as db:
        return {row[0]: row[1] for row in db.execute("SELECT id, json_extract(content, '$.State') FROM jobs")}


async def test_flushes_asked_while_a_write_runs_share_the_next_one(store: Recording) -> None:
    keeper = housekeeper(store)
    store.save_job(a_job(1))
    store.hold.clear()
    first = asyncio.create_task(keeper.flush())
    await asyncio.sleep(0.05)  # the first write runs (held)
    waiting = []
    for number in range(2, 6):
        store.save_job(a_job(number))
        waiting.append(asyncio.create_task(keeper.flush()))
    store.hold.set()

    await asyncio.gather(first, *waiting)

    assert [len(written) for written in store.writes] == [1, 4]  # two writes for five flushes
    assert len(rows(store)) == 5


async def test_a_failed_write_loses_nothing_and_is_logged_once(
    store: Recording, caplog: pytest.LogCaptureFixture
) -> None:
    keeper = housekeeper(store)
    store.save_job(a_job(1, "Running"))
    store.failing = 3

    with caplog.at_level(logging.ERROR):
        for _ in range(3):
            with pytest.raises(sqlite3.OperationalError):
                await keeper.flush()
            store.save_job(a_job(1, "Success"))  # a newer change of the same job, meanwhile
    await keeper.flush()

    assert rows(store) == {a_job(1).id: "Success"}  # the newer change, not the one put back
    assert len([r for r in caplog.records if "cannot be written" in r.message]) == 1


async def test_a_flush_cancelled_mid_write_lets_no_later_write_land_first(store: Recording) -> None:
    keeper = housekeeper(store)
    store.save_job(a_job(1, "Running"))
    store.hold.clear()
    first = asyncio.create_task(keeper.flush())
    await asyncio.sleep(0.05)
    first.cancel()  # the service stops while the write runs
    store.save_job(a_job(1, "Success"))
    second = asyncio.create_task(keeper.flush())
    await asyncio.sleep(0.05)
    assert not second.done()  # waits for the write started before
    store.hold.set()

    with pytest.raises(asyncio.CancelledError):
        await first
    await second

    assert [written for written in store.writes] == [{a_job(1).id}, {a_job(1).id}]
    assert rows(store) == {a_job(1).id: "Success"}


async def test_a_replica_cut_off_from_the_others_does_not_judge_silence(store: Recording) -> None:
    """Heartbeats may reach the other replicas only: while this one cannot read their changes, a server's
    silence here means nothing, and its status is left as it was."""
    now = [1000.0]
    registry = Registry(store, not_responding_after=10, stopped_after=60, clock=lambda: now[0])
    server = registry.register_server(
        name="orthanc-1", url="http://127.0.0.1:8001", incarnation="i", token="t"
    )
    current = [False]
    keeper = Housekeeper(
        registry,
        store,
        liveness_interval=1,
        history_max_age=60,
        history_max_jobs=100,
        current=lambda: current[0],
    )
    now[0] += 30

    await keeper.check_liveness()
    assert registry.server_status(server) is ServerStatus.ALIVE

    current[0] = True
    await keeper.check_liveness()
    assert registry.server_status(server) is ServerStatus.NOT_RESPONDING

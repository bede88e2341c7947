"""Runs of an action on many jobs: a few at once, stopped when cancelled, every job accounted for."""

import asyncio

import pytest

from orthanc_jobs.core.bulk import BulkActions, plan
from orthanc_jobs.core.changes import ActionProgress, Change
from orthanc_jobs.core.model import Job, Server
from orthanc_jobs.core.registry import Registry
from orthanc_jobs.core.store import SqliteStore
from tests.unit.core.test_registry import job, register

IDS = [f"{n:08d}-1111-1111-1111-111111111111" for n in range(30)]


def _registry() -> tuple[Registry, list[Change]]:
    registry = Registry(SqliteStore(":memory:"), not_responding_after=10, stopped_after=60)
    told: list[Change] = []
    registry.subscribers.append(told.append)
    server = register(registry)
    for job_id in IDS:
        registry.apply_snapshot(server, job(job_id, "Failure"))
    return registry, told


async def _nothing(owner: Server, job_id: str) -> None:
    pass


async def test_at_most_a_few_jobs_are_sent_at_once_and_each_has_its_result() -> None:
    registry, told = _registry()
    running, most = 0, 0

    async def perform(owner: Server, job: Job) -> tuple[int, str]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1
        return (200, "") if job.id != IDS[5] else (400, "Bad sequence of calls")

    runs = BulkActions(registry, rate=1000, concurrency=4)
    run = runs.start(plan(registry, "resubmit", registry.list_jobs()), perform, _nothing)
    while run.state == "Running":
        await asyncio.sleep(0.01)
    assert most == 4
    assert run.counts() == {"done": 29, "refused": 1, "unreachable": 0}
    assert sorted(result["ID"] for result in run.results) == IDS
    progress = [change for change in told if isinstance(change, ActionProgress)]
    assert (
        progress[0].action_id == progress[-1].action_id == run.id
        and b'"State":"Done"' in progress[-1].summary
    )


async def test_a_cancelled_run_sends_no_more() -> None:
    registry, _ = _registry()
    sent: list[str] = []

    async def perform(owner: Server, job: Job) -> tuple[int, str]:
        sent.append(job.id)
        return 200, ""

    runs = BulkActions(registry, rate=50)  # one every 20 ms
    run = runs.start(plan(registry, "resubmit", registry.list_jobs()), perform, _nothing)
    await asyncio.sleep(0.1)
    runs.cancel(run)
    while run.state == "Running":
        await asyncio.sleep(0.01)
    assert run.state == "Cancelled" and 0 < len(sent) < len(IDS) and len(run.results) == len(sent)


async def test_an_owner_that_does_not_answer_is_told_apart_from_a_refusal() -> None:
    registry, _ = _registry()

    async def perform(owner: Server, job: Job) -> tuple[int, str]:
        raise OSError("connection refused")

    runs = BulkActions(registry, rate=1000)
    run = runs.start(plan(registry, "resubmit", registry.list_jobs()[:2]), perform, _nothing)
    while run.state == "Running":
        await asyncio.sleep(0.01)
    assert [result["Result"] for result in run.results] == ["unreachable", "unreachable"]
    assert "connection refused" in run.results[0]["Reason"]


async def test_kept_runs_are_bounded_even_behind_a_long_one_and_forget_their_plans() -> None:
    from orthanc_jobs.core.bulk import MAX_KEPT_ACTIONS

    registry, _ = _registry()
    release = asyncio.Event()

    async def slow(owner: Server, job: Job) -> tuple[int, str]:
        await release.wait()
        return 200, ""

    async def quick(owner: Server, job: Job) -> tuple[int, str]:
        return 200, ""

    runs = BulkActions(registry, rate=1000)
    long_run = runs.start(plan(registry, "resubmit", registry.list_jobs()[:1]), slow, _nothing)
    short = [
        runs.start(plan(registry, "resubmit", registry.list_jobs()[:1]), quick, _nothing) for _ in range(50)
    ]
    for run in short:
        while run.state == "Running":
            await asyncio.sleep(0.001)
    runs.start(plan(registry, "resubmit", []), quick, _nothing)
    kept = runs.recent()
    assert len(kept) <= MAX_KEPT_ACTIONS + 1 and long_run in kept
    assert short[-1].plan.accepted == [] and short[-1].summary()["Total"] == 1
    release.set()
    while long_run.state == "Running":
        await asyncio.sleep(0.001)


async def test_the_last_event_carries_a_bounded_part_of_the_results(
    monkeypatch: "pytest.MonkeyPatch",
) -> None:
    import orjson

    from orthanc_jobs.core import bulk

    monkeypatch.setattr(bulk, "MAX_RESULTS_IN_EVENT", 5)
    registry, told = _registry()

    async def perform(owner: Server, job: Job) -> tuple[int, str]:
        return 200, ""

    run = BulkActions(registry, rate=1000).start(
        plan(registry, "resubmit", registry.list_jobs()), perform, _nothing
    )
    while run.state == "Running":
        await asyncio.sleep(0.01)
    last = orjson.loads([change for change in told if isinstance(change, ActionProgress)][-1].summary)
    assert len(last["Results"]) == 5 and last["ResultsTruncated"] is True and last["Done"] == 30
    assert len(run.summary()["Results"]) == 30  # the whole list, by its route

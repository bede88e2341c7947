"""Runs shared by concurrent callers (look-ups, credentials checks, readiness probes)."""

import asyncio

from orthanc_jobs.core.background import SharedRuns


async def test_concurrent_calls_for_a_key_share_one_run_and_a_later_call_starts_another() -> None:
    shared: SharedRuns[int] = SharedRuns()
    started = 0
    release = asyncio.Event()

    async def work() -> int:
        nonlocal started
        started += 1
        await release.wait()
        return started

    callers = [asyncio.ensure_future(shared.run("a", work)) for _ in range(10)]
    other = asyncio.ensure_future(shared.run("b", work))
    await asyncio.sleep(0)
    callers[0].cancel()  # a caller that goes away does not cancel the run of the others
    release.set()
    answers = await asyncio.gather(*callers[1:], other)
    assert sorted(set(answers)) == [1, 2] and started == 2
    assert await shared.run("a", work) == 3  # ended: a new run, never the old answer


async def test_a_run_that_ended_is_not_handed_out_before_it_is_forgotten() -> None:
    shared: SharedRuns[str] = SharedRuns()
    runs = 0

    async def work() -> str:
        nonlocal runs
        runs += 1
        return f"run {runs}"

    first = asyncio.ensure_future(shared.run("a", work))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the run is done; its forgetting is scheduled, not yet run
    assert await shared.run("a", work) == "run 2"
    assert await first == "run 1"

"""Looking up job ids the registry does not know: shared rounds, concurrent callers, servers down."""

import asyncio
import time
import uuid

import httpx
import pytest

from orthanc_jobs.core.lookups import Lookups, Unreadable
from orthanc_jobs.core.orthanc import OrthancClient
from orthanc_jobs.core.registry import Registry
from tests.unit.core.conftest import URLS
from tests.unit.fake_orthanc import FakeOrthanc


@pytest.fixture
async def lookups(registry: Registry, orthanc: FakeOrthanc):
    client = OrthancClient(5, transport=httpx.MockTransport(orthanc.handler))
    yield Lookups(registry, client, timeout=1)
    await client.aclose()


async def test_discovery_answers_even_when_a_server_is_down(
    lookups: Lookups, registry: Registry, orthanc: FakeOrthanc
) -> None:
    job_id = orthanc.add_job(URLS[1], "Running")
    orthanc.down.add(URLS[0])
    started = time.monotonic()
    job = await lookups.find(job_id)
    assert job is not None and job.server_url == URLS[1]
    assert time.monotonic() - started < 1
    assert await lookups.find("00000000-0000-0000-0000-000000000000") is None


async def test_concurrent_lookups_of_one_id_share_one_round_of_requests(
    lookups: Lookups, registry: Registry, orthanc: FakeOrthanc
) -> None:
    job_id = orthanc.add_job(URLS[1], "Running")
    found = await asyncio.gather(*(lookups.find(job_id) for _ in range(50)))
    assert {job.server_url for job in found if job is not None} == {URLS[1]}
    asked = [(r.url.port, r.url.path) for r in orthanc.requests]
    # One listing per server, once for every caller, then one read of the job from its owner.
    assert sorted(asked) == [(8001, "/jobs"), (8002, "/jobs"), (8002, f"/jobs/{job_id}")]


async def test_lookups_of_many_unknown_ids_share_each_servers_rounds(
    lookups: Lookups, registry: Registry, orthanc: FakeOrthanc
) -> None:
    unknown = [str(uuid.uuid4()) for _ in range(200)]
    job_id = orthanc.add_job(URLS[0], "Success")
    found = await asyncio.gather(*(lookups.find(i) for i in [*unknown, job_id]))
    assert found[:-1] == [None] * len(unknown)
    assert found[-1] is not None and found[-1].server_url == URLS[0]
    listings = [r for r in orthanc.requests if r.url.path == "/jobs"]
    assert len(listings) == len(URLS)  # one round per server for all 201 ids
    assert not any(
        r.url.path.startswith("/jobs/") and r.url.path != f"/jobs/{job_id}" for r in orthanc.requests
    )


async def test_a_job_created_while_a_round_is_on_its_way_is_found_by_the_next(
    registry: Registry, orthanc: FakeOrthanc
) -> None:
    listing_sent = asyncio.Event()
    release = asyncio.Event()

    async def slow_listing(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/jobs" and not release.is_set():
            answer = orthanc.handler(request)  # the listing as it was when the round was sent
            listing_sent.set()
            await release.wait()
            return answer
        return orthanc.handler(request)

    client = OrthancClient(5, transport=httpx.MockTransport(slow_listing))
    lookups = Lookups(registry, client, timeout=5)
    first = asyncio.ensure_future(lookups.find(str(uuid.uuid4())))
    await listing_sent.wait()
    job_id = orthanc.add_job(URLS[1], "Pending")  # created after the round's listing was written
    second = asyncio.ensure_future(lookups.find(job_id))
    await asyncio.sleep(0.01)
    release.set()
    assert await first is None
    found = await second
    assert found is not None and found.id == job_id and found.server_url == URLS[1]
    await client.aclose()


async def test_a_lookup_round_a_server_does_not_answer_in_time_counts_as_not_found(
    registry: Registry, orthanc: FakeOrthanc
) -> None:
    async def frozen_first_server(request: httpx.Request) -> httpx.Response:
        if request.url.port == 8001:
            await asyncio.sleep(10)
        return orthanc.handler(request)

    client = OrthancClient(5, transport=httpx.MockTransport(frozen_first_server))
    lookups = Lookups(registry, client, timeout=0.2)
    job_id = orthanc.add_job(URLS[1], "Running")
    started = time.monotonic()
    found = await lookups.find(job_id)
    assert found is not None and found.server_url == URLS[1]  # without waiting for the frozen one
    assert await lookups.find(str(uuid.uuid4())) is None
    assert time.monotonic() - started < 2
    await client.aclose()


async def test_a_job_orthanc_cannot_write_is_found_as_unreadable_with_its_owner(
    lookups: Lookups, registry: Registry, orthanc: FakeOrthanc
) -> None:
    job_id = orthanc.add_job(URLS[1], "Pending")
    orthanc.unwritable.add(job_id)

    found = await lookups.find(job_id)

    assert found == Unreadable(job_id, registry.server_by_url(URLS[1]))
    assert registry.get_job(job_id) is None


async def test_a_round_on_a_connection_orthanc_just_closed_is_sent_again(
    registry: Registry, orthanc: FakeOrthanc
) -> None:
    """A kept-alive connection Orthanc closes just as it is reused: the owner's listing must not come back
    empty (its jobs would answer 404)."""
    closed_once: set[int] = set()

    def closing_once(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/jobs" and request.url.port not in closed_once:
            closed_once.add(request.url.port)
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return orthanc.handler(request)

    client = OrthancClient(5, transport=httpx.MockTransport(closing_once))
    lookups = Lookups(registry, client, timeout=1)
    job_id = orthanc.add_job(URLS[1], "Running")
    found = await lookups.find(job_id)
    assert found is not None and found.server_url == URLS[1]
    await client.aclose()

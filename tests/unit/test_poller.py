"""Reading servers into the registry: resynchronisations, polls of unfinished jobs, discovery."""

import asyncio
import time
import uuid

import httpx
import pytest

from orthanc_jobs.core.orthanc import OrthancClient
from orthanc_jobs.core.poller import EXPAND_THRESHOLD, Poller
from orthanc_jobs.core.registry import Registry
from tests.unit.fake_orthanc import TOKEN, FakeOrthanc, registry_of

URLS = ["http://127.0.0.1:8001", "http://127.0.0.1:8002"]


@pytest.fixture
def orthanc() -> FakeOrthanc:
    fake = FakeOrthanc()
    for url in URLS:
        fake.add_server(url)
    return fake


@pytest.fixture
def registry() -> Registry:
    return registry_of(URLS)


@pytest.fixture
async def poller(registry: Registry, orthanc: FakeOrthanc):
    client = OrthancClient(5, transport=httpx.MockTransport(orthanc.handler))
    yield Poller(registry, client, poll_interval=1, resync_interval=30, lookup_timeout=1)
    await client.aclose()


async def test_resync_reads_every_job_with_the_servers_token(
    poller: Poller, registry: Registry, orthanc: FakeOrthanc
) -> None:
    ids = [orthanc.add_job(URLS[0], "Success") for _ in range(3)]
    server = registry.server_by_url(URLS[0])
    assert await poller.resync(server)
    assert sorted(j.id for j in registry.list_jobs()) == sorted(ids)
    assert server.last_resync is not None
    assert {r.headers["authorization"] for r in orthanc.requests} == {TOKEN}


async def test_few_unfinished_jobs_are_polled_one_by_one_many_in_one_listing(
    poller: Poller, registry: Registry, orthanc: FakeOrthanc
) -> None:
    few = [orthanc.add_job(URLS[0], "Running") for _ in range(3)]
    many = [orthanc.add_job(URLS[1], "Pending") for _ in range(EXPAND_THRESHOLD + 1)]
    for url in URLS:
        await poller.resync(registry.server_by_url(url))
    for job_id in few:
        orthanc.jobs[URLS[0]][job_id].update(State="Success", Timestamp="20261128T120000.000000")
    for job_id in many:
        orthanc.jobs[URLS[1]][job_id].update(State="Running", Timestamp="20261128T120000.000000")
    orthanc.requests.clear()

    await poller.poll_unfinished()
    asked = {(r.url.host, r.url.port, r.url.path) for r in orthanc.requests}
    assert asked == {("127.0.0.1", 8001, f"/jobs/{i}") for i in few} | {("127.0.0.1", 8002, "/jobs")}
    assert {registry.get_job(i).state for i in few} == {"Success"}
    assert {registry.get_job(i).state for i in many} == {"Running"}


async def test_discovery_answers_even_when_a_server_is_down(
    poller: Poller, registry: Registry, orthanc: FakeOrthanc
) -> None:
    job_id = orthanc.add_job(URLS[1], "Running")
    orthanc.down.add(URLS[0])
    started = time.monotonic()
    job = await poller.discover_job(job_id)
    assert job is not None and job.server_url == URLS[1]
    assert time.monotonic() - started < 1
    assert await poller.discover_job("00000000-0000-0000-0000-000000000000") is None


async def test_a_refresh_of_a_job_its_owner_no_longer_has_keeps_what_is_known(
    poller: Poller, registry: Registry, orthanc: FakeOrthanc
) -> None:
    job_id = orthanc.add_job(URLS[0], "Success")
    server = registry.server_by_url(URLS[0])
    await poller.refresh_job(server, job_id)
    del orthanc.jobs[URLS[0]][job_id]
    assert (await poller.refresh_job(server, job_id)).state == "Success"
    orthanc.down.add(URLS[0])
    assert (await poller.refresh_job(server, job_id)).state == "Success"


async def test_concurrent_lookups_of_one_id_share_one_round_of_requests(
    poller: Poller, registry: Registry, orthanc: FakeOrthanc
) -> None:
    job_id = orthanc.add_job(URLS[1], "Running")
    found = await asyncio.gather(*(poller.discover_job(job_id) for _ in range(50)))
    assert {job.server_url for job in found if job is not None} == {URLS[1]}
    asked = [(r.url.port, r.url.path) for r in orthanc.requests]
    # One listing per server, once for every caller, then one read of the job from its owner.
    assert sorted(asked) == [(8001, "/jobs"), (8002, "/jobs"), (8002, f"/jobs/{job_id}")]


async def test_lookups_of_many_unknown_ids_share_each_servers_rounds(
    poller: Poller, registry: Registry, orthanc: FakeOrthanc
) -> None:
    unknown = [str(uuid.uuid4()) for _ in range(200)]
    job_id = orthanc.add_job(URLS[0], "Success")
    found = await asyncio.gather(*(poller.discover_job(i) for i in [*unknown, job_id]))
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
    poller = Poller(registry, client, poll_interval=1, resync_interval=30, lookup_timeout=5)
    first = asyncio.ensure_future(poller.discover_job(str(uuid.uuid4())))
    await listing_sent.wait()
    job_id = orthanc.add_job(URLS[1], "Pending")  # created after the round's listing was written
    second = asyncio.ensure_future(poller.discover_job(job_id))
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
    poller = Poller(registry, client, poll_interval=1, resync_interval=30, lookup_timeout=0.2)
    job_id = orthanc.add_job(URLS[1], "Running")
    started = time.monotonic()
    found = await poller.discover_job(job_id)
    assert found is not None and found.server_url == URLS[1]  # without waiting for the frozen one
    assert await poller.discover_job(str(uuid.uuid4())) is None
    assert time.monotonic() - started < 2
    await client.aclose()


async def test_a_listing_orthanc_cannot_write_is_read_job_by_job(
    poller: Poller, registry: Registry, orthanc: FakeOrthanc
) -> None:
    """One job with a NaN progress makes Orthanc answer 400 for /jobs?expand: the others are still read,
    and that one is not taken for gone."""
    server = registry.server_by_url(URLS[0])
    pending = orthanc.add_job(URLS[0], "Pending")
    assert await poller.resync(server)
    assert registry.get_job(pending).state == "Pending"
    orthanc.unwritable.add(pending)
    fine = [orthanc.add_job(URLS[0], "Success") for _ in range(3)]

    assert await poller.resync(server)

    assert {job_id: registry.get_job(job_id).state for job_id in fine} == dict.fromkeys(fine, "Success")
    assert registry.get_job(pending).state == "Pending"  # not "no longer known"
    assert not registry.get_job(pending).presumed


async def test_a_job_orthanc_cannot_write_is_found_as_unreadable_with_its_owner(
    poller: Poller, registry: Registry, orthanc: FakeOrthanc
) -> None:
    from orthanc_jobs.core.poller import Unreadable

    job_id = orthanc.add_job(URLS[1], "Pending")
    orthanc.unwritable.add(job_id)

    found = await poller.discover_job(job_id)

    assert found == Unreadable(job_id, registry.server_by_url(URLS[1]))
    assert registry.get_job(job_id) is None


async def test_a_job_known_only_by_an_event_without_json_is_read_at_the_next_poll(
    poller: Poller, registry: Registry, orthanc: FakeOrthanc
) -> None:
    server = registry.server_by_url(URLS[0])
    job_id = orthanc.add_job(URLS[0], "Running")
    gone = "00000000-0000-0000-0000-000000000000"
    poller.schedule_read(server, job_id)
    poller.schedule_read(server, gone)

    await poller.poll_unfinished()

    assert registry.get_job(job_id).state == "Running"
    assert registry.get_job(gone) is None
    asked = len(orthanc.requests)
    await poller.poll_unfinished()  # read once, then polled as any unfinished job
    assert len(orthanc.requests) == asked + 1


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
    poller = Poller(registry, client, poll_interval=1, resync_interval=30, lookup_timeout=1)
    job_id = orthanc.add_job(URLS[1], "Running")
    found = await poller.discover_job(job_id)
    assert found is not None and found.server_url == URLS[1]
    await client.aclose()

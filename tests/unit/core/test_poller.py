"""Reading servers into the registry: resynchronisations, polls of unfinished jobs, scheduled reads."""

import httpx
import pytest

from orthanc_jobs.core.orthanc import OrthancClient
from orthanc_jobs.core.poller import EXPAND_THRESHOLD, Poller
from orthanc_jobs.core.registry import Registry
from tests.unit.core.conftest import URLS
from tests.unit.fake_orthanc import TOKEN, FakeOrthanc


@pytest.fixture
async def poller(registry: Registry, orthanc: FakeOrthanc):
    client = OrthancClient(5, transport=httpx.MockTransport(orthanc.handler))
    yield Poller(registry, client, poll_interval=1, resync_interval=30)
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

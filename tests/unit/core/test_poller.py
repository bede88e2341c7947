"""Reading servers into the registry: resynchronisations, polls of unfinished jobs, scheduled reads."""

import httpx
import pytest

from orthanc_jobs.core.orthanc import OrthancClient
from orthanc_jobs.core.poller import EXPAND_THRESHOLD, LISTED_PER_UNFINISHED, REQUESTS_AT_ONCE, Poller
from orthanc_jobs.core.registry import Registry
from tests.unit.core.conftest import URLS
from tests.unit.fake_orthanc import TOKEN, ConcurrencyCounter, FakeOrthanc, registry_of


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


async def test_unfinished_jobs_are_polled_one_by_one_or_in_one_listing_whichever_asks_less(
    poller: Poller, registry: Registry, orthanc: FakeOrthanc
) -> None:
    extra_server = "http://127.0.0.1:8003"
    orthanc.add_server(extra_server)
    registry.register_server(name="orthanc-3", url=extra_server, incarnation="inc-3", token=TOKEN)
    # 3 unfinished among 30 finished: one by one. 17 unfinished: one listing, whatever the history. 2
    # unfinished among 3 finished (a small JobsHistorySize): one listing.
    few = [orthanc.add_job(URLS[0], "Running") for _ in range(3)]
    for _ in range(LISTED_PER_UNFINISHED * 3 + 6):
        orthanc.add_job(URLS[0], "Success")
    many = [orthanc.add_job(URLS[1], "Pending") for _ in range(EXPAND_THRESHOLD + 1)]
    small = [orthanc.add_job(extra_server, "Running") for _ in range(2)]
    for _ in range(3):
        orthanc.add_job(extra_server, "Success")
    for url in (*URLS, extra_server):
        await poller.resync(registry.server_by_url(url))
    for url, ids, state in (
        (URLS[0], few, "Success"),
        (URLS[1], many, "Running"),
        (extra_server, small, "Success"),
    ):
        for job_id in ids:
            orthanc.jobs[url][job_id].update(State=state, Timestamp="20261128T120000.000000")
    orthanc.requests.clear()

    await poller.poll_unfinished()
    asked = sorted((r.url.port, r.url.path) for r in orthanc.requests)
    extra_port = httpx.URL(extra_server).port
    assert asked == sorted([(8001, f"/jobs/{i}") for i in few] + [(8002, "/jobs"), (extra_port, "/jobs")])
    assert {registry.get_job(i).state for i in few + small} == {"Success"}
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


async def test_hundreds_of_servers_are_polled_a_few_at_a_time() -> None:
    """A poll of 200 servers keeps at most REQUESTS_AT_ONCE requests under way (the event loop stays free
    for the clients' requests in between), and still reads every one."""
    urls = [f"http://127.0.0.1:{9000 + n}" for n in range(200)]
    registry = registry_of(urls)
    fake = FakeOrthanc()
    for url in urls:
        fake.add_server(url)
    running = {url: fake.add_job(url, "Running") for url in urls}
    counter = ConcurrencyCounter(fake)
    client = OrthancClient(5, transport=counter.transport)
    poller = Poller(registry, client, poll_interval=1, resync_interval=30)
    await poller.resync_all()
    assert len(registry.list_jobs()) == 200 and 1 < counter.most <= REQUESTS_AT_ONCE
    for url, job_id in running.items():
        fake.jobs[url][job_id].update(State="Success", Timestamp="20261128T120000.000000")
    counter.most = 0
    await poller.poll_unfinished()
    assert {job.state for job in registry.list_jobs()} == {"Success"} and 1 < counter.most <= REQUESTS_AT_ONCE
    await client.aclose()

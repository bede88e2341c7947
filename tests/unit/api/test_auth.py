"""The cluster's credentials: every live server asked at once, answers cached both ways, refusals at once,
and open event streams checked again and ended when their credentials are refused."""

import asyncio
import base64
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from orthanc_jobs.api.app import build_services, create_app
from orthanc_jobs.api.auth import (
    CHECKS_AT_ONCE,
    REFRESH_AHEAD_FRACTION,
    UNANSWERED_GRACE_SECONDS,
    UNHURRIED_AT_ONCE,
    ChecksBusy,
    ClusterAuthenticator,
)
from orthanc_jobs.api.context import Services
from orthanc_jobs.config import Settings
from orthanc_jobs.core.errors import ServerUnavailable, Unauthorized
from orthanc_jobs.core.orthanc import OrthancClient
from orthanc_jobs.core.registry import Registry
from tests.unit.fake_orthanc import TOKEN, ConcurrencyCounter, FakeOrthanc, registry_of

URLS = ["http://127.0.0.1:8001", "http://127.0.0.1:8002", "http://127.0.0.1:8003"]
ALICE = "Basic " + base64.b64encode(b"alice:alice-password").decode()
WRONG = "Basic " + base64.b64encode(b"alice:wrong").decode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def orthanc() -> FakeOrthanc:
    fake = FakeOrthanc()
    for url in URLS:
        fake.add_server(url)
        fake.credentials[url].add(ALICE)
    return fake


@pytest.fixture
def registry() -> Registry:
    return registry_of(URLS)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def client(orthanc: FakeOrthanc) -> AsyncIterator[OrthancClient]:
    client = OrthancClient(5, transport=httpx.MockTransport(orthanc.handler))
    yield client
    await client.aclose()


@pytest.fixture
def authenticator(registry: Registry, client: OrthancClient, clock: Clock) -> ClusterAuthenticator:
    return ClusterAuthenticator(registry, client, cache_seconds=10, check_timeout=1, clock=clock)


def checks_of(orthanc: FakeOrthanc, authorization: str) -> int:
    return len([r for r in orthanc.requests if r.headers.get("authorization") == authorization])


async def test_servers_that_disagree_give_one_answer_a_refusal(
    authenticator: ClusterAuthenticator, orthanc: FakeOrthanc
) -> None:
    """A password revoked on one server only: refused every time, not one time in three."""
    orthanc.credentials[URLS[1]].discard(ALICE)
    for _ in range(20):
        with pytest.raises(Unauthorized):
            await authenticator.check(ALICE)
    assert checks_of(orthanc, ALICE) == len(URLS)  # one round, then the refusal is remembered


async def test_a_refusal_replaces_a_cached_acceptance_at_once(
    authenticator: ClusterAuthenticator, orthanc: FakeOrthanc
) -> None:
    await authenticator.check(ALICE)
    orthanc.credentials[URLS[2]].discard(ALICE)
    await authenticator.check(ALICE)  # the acceptance is cached: the servers are not asked
    assert checks_of(orthanc, ALICE) == len(URLS)
    with pytest.raises(Unauthorized):
        await authenticator.check(ALICE, fresh=True)  # as an open stream asks again
    with pytest.raises(Unauthorized):
        await authenticator.check(ALICE)
    assert checks_of(orthanc, ALICE) == 2 * len(URLS)


async def test_answers_last_the_cache_period(
    authenticator: ClusterAuthenticator, orthanc: FakeOrthanc, clock: Clock
) -> None:
    with pytest.raises(Unauthorized):
        await authenticator.check(WRONG)
    orthanc.credentials[URLS[0]].add(WRONG)
    for url in URLS[1:]:
        orthanc.credentials[url].add(WRONG)  # the password becomes right everywhere
    clock.now += 9
    with pytest.raises(Unauthorized):
        await authenticator.check(WRONG)
    clock.now += 2
    await authenticator.check(WRONG)
    for url in URLS:
        orthanc.credentials[url].discard(WRONG)
    clock.now += 7
    await authenticator.check(WRONG)  # the acceptance lasts as long
    assert checks_of(orthanc, WRONG) == 2 * len(URLS)


async def test_credentials_in_use_are_asked_again_before_their_acceptance_ends(
    authenticator: ClusterAuthenticator, orthanc: FakeOrthanc, clock: Clock
) -> None:
    """A client that keeps calling never waits for a round of questions: in the last part of an
    acceptance's life, the servers are asked again in the background; what they answer then holds."""
    await authenticator.check(ALICE)
    clock.now += 10 * (1 - REFRESH_AHEAD_FRACTION) + 0.5
    assert authenticator.accepted_now(ALICE)  # answered at once, and asked again meanwhile
    await authenticator.check(ALICE)  # one round only, shared
    await asyncio.sleep(0.01)
    assert checks_of(orthanc, ALICE) == 2 * len(URLS)
    clock.now += 5  # past the first acceptance: the second holds
    assert authenticator.accepted_now(ALICE)
    await authenticator.check(ALICE)
    assert checks_of(orthanc, ALICE) == 2 * len(URLS)

    # Revoked on one server: the round ahead of time learns it, and the next request is refused.
    orthanc.credentials[URLS[1]].discard(ALICE)
    clock.now += 4
    await authenticator.check(ALICE)
    await asyncio.sleep(0.01)
    assert not authenticator.accepted_now(ALICE)
    with pytest.raises(Unauthorized):
        await authenticator.check(ALICE)
    assert checks_of(orthanc, ALICE) == 3 * len(URLS)


async def test_concurrent_checks_of_one_header_share_one_round(
    registry: Registry, orthanc: FakeOrthanc, clock: Clock
) -> None:
    answered = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await answered.wait()
        return orthanc.handler(request)

    client = OrthancClient(5, transport=httpx.MockTransport(slow))
    authenticator = ClusterAuthenticator(registry, client, cache_seconds=10, check_timeout=1, clock=clock)
    for authorization, expected in ((ALICE, None), (WRONG, Unauthorized)):
        checks = [asyncio.ensure_future(authenticator.check(authorization)) for _ in range(50)]
        await asyncio.sleep(0.01)
        checks[0].cancel()  # a caller that goes away cancels nobody else's answer
        answered.set()
        results = await asyncio.gather(*checks[1:], return_exceptions=True)
        assert all(result is None if expected is None else isinstance(result, expected) for result in results)
        assert checks_of(orthanc, authorization) == len(URLS)
        answered.clear()
    await client.aclose()


async def test_silent_servers_count_for_nothing_and_no_answer_is_503(
    authenticator: ClusterAuthenticator, orthanc: FakeOrthanc, clock: Clock
) -> None:
    orthanc.down = set(URLS[1:])
    orthanc.credentials[URLS[1]].discard(ALICE)  # it would refuse, but cannot say so
    await authenticator.check(ALICE)
    orthanc.down = set(URLS)
    with pytest.raises(ServerUnavailable):
        await authenticator.check(WRONG)
    orthanc.down = set()
    with pytest.raises(Unauthorized):
        await authenticator.check(WRONG)  # "nobody answered" was not remembered
    clock.now += 11
    with pytest.raises(Unauthorized):
        await authenticator.check(ALICE)


async def test_while_no_server_can_answer_recently_accepted_credentials_still_read(
    authenticator: ClusterAuthenticator, orthanc: FakeOrthanc, clock: Clock
) -> None:
    await authenticator.check(ALICE)
    orthanc.down = set(URLS)  # their index database away: Orthanc answers nothing
    clock.now += 11  # past the cache

    await authenticator.check(ALICE)  # accepted by them 11 s ago, and nobody can say otherwise
    with pytest.raises(ServerUnavailable):
        await authenticator.check(WRONG)  # never accepted
    clock.now += UNANSWERED_GRACE_SECONDS
    with pytest.raises(ServerUnavailable):
        await authenticator.check(ALICE)  # too long ago
    orthanc.down = set()
    orthanc.credentials[URLS[0]].discard(ALICE)
    with pytest.raises(Unauthorized):
        await authenticator.check(ALICE)
    orthanc.down = set(URLS)
    with pytest.raises(Unauthorized):
        await authenticator.check(ALICE)  # a refusal is never forgotten for an outage


async def test_no_grace_when_every_request_must_be_checked_or_when_checks_only_queue(
    registry: Registry, client: OrthancClient, orthanc: FakeOrthanc, clock: Clock
) -> None:
    uncached = ClusterAuthenticator(registry, client, cache_seconds=0, check_timeout=1, clock=clock)
    await uncached.check(ALICE)
    orthanc.down = set(URLS)
    with pytest.raises(ServerUnavailable):
        await uncached.check(ALICE)  # ORTHANC_JOBS_AUTH_CACHE_SECONDS=0: nothing stands in for the servers

    orthanc.down = set()
    cached = ClusterAuthenticator(registry, client, cache_seconds=10, check_timeout=0.2, clock=clock)
    await cached.check(ALICE)
    clock.now += 11
    for gate in cached._gates.values():  # every place taken by other checks (a flood of passwords)
        for _ in range(CHECKS_AT_ONCE):
            await gate.acquire()
    with pytest.raises(ChecksBusy):
        await cached.check(ALICE)


async def stream_then_wait(
    service: httpx.AsyncClient, orthanc: FakeOrthanc, timeout: float, meanwhile: Callable[[], object]
) -> httpx.Response:
    """Open the event stream as Alice; once the servers let it in, ``meanwhile()``; the answer once the
    stream ends (httpx's ASGI transport hands it over only then)."""
    opened = asyncio.ensure_future(service.get("/orthanc-jobs/events", headers={"Authorization": ALICE}))
    while checks_of(orthanc, ALICE) < len(URLS):
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.01)
    result = meanwhile()
    if asyncio.iscoroutine(result):
        await result
    return await asyncio.wait_for(opened, timeout)


def app_with(
    orthanc: FakeOrthanc, authenticator: Callable[[Registry, OrthancClient], ClusterAuthenticator]
) -> tuple[Services, httpx.AsyncClient]:
    """The service, its servers registered, with this authenticator."""
    settings = Settings(secret="unit-test-secret", database=":memory:")
    services = build_services(
        settings, client=OrthancClient(5, transport=httpx.MockTransport(orthanc.handler))
    )
    services.authenticator = authenticator(services.registry, services.client)
    for n, url in enumerate(URLS, start=1):
        services.registry.register_server(name=f"orthanc-{n}", url=url, incarnation=f"inc-{n}", token=TOKEN)
    app = create_app(services=services)
    return services, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service")


async def test_a_stream_ends_when_its_credentials_are_refused_at_the_recheck(orthanc: FakeOrthanc) -> None:
    services, service = app_with(
        orthanc, lambda registry, client: ClusterAuthenticator(registry, client, 0.1, check_timeout=1)
    )
    async with service:

        async def servers_silent_then_one_refuses() -> None:
            services.events.publish("job", b'{"ID": "x"}')
            orthanc.down = set(URLS)
            await asyncio.sleep(0.5)  # checks no server answers: the stream stays open
            orthanc.credentials[URLS[0]].discard(ALICE)
            orthanc.down = set()

        loop = asyncio.get_running_loop()
        started = loop.time()
        answer = await stream_then_wait(service, orthanc, 2, servers_silent_then_one_refuses)
        assert loop.time() - started > 0.5
        assert answer.status_code == 200
        assert answer.text.startswith(": connected\n\n")
        assert 'data: {"ID": "x"}' in answer.text
        assert (await service.get("/jobs", headers={"Authorization": ALICE})).status_code == 401
        assert not services.authenticator._on_refusal  # nothing left behind by the stream


async def test_a_refusal_seen_by_any_request_ends_the_streams_at_once(orthanc: FakeOrthanc) -> None:
    clock = Clock()
    _, service = app_with(
        orthanc, lambda registry, client: ClusterAuthenticator(registry, client, 10, 1, clock=clock)
    )
    async with service:

        async def revoke_then_ask() -> None:
            orthanc.credentials[URLS[2]].discard(ALICE)
            clock.now += 11  # the stream's own re-check is 10 s away, on the event loop's clock
            assert (await service.get("/jobs", headers={"Authorization": ALICE})).status_code == 401

        answer = await stream_then_wait(service, orthanc, 1, revoke_then_ask)
        assert answer.status_code == 200


async def test_the_round_ahead_of_time_asks_a_few_servers_at_a_time(clock: Clock) -> None:
    """With 100 servers, a round that a request waits for asks them all at once; the round ahead of time
    at most UNHURRIED_AT_ONCE at once (the event loop stays free for the requests in between)."""
    urls = [f"http://127.0.0.1:{9000 + n}" for n in range(100)]
    fake = FakeOrthanc()
    for url in urls:
        fake.add_server(url)
        fake.credentials[url].add(ALICE)
    counter = ConcurrencyCounter(fake)
    client = OrthancClient(5, transport=counter.transport)
    authenticator = ClusterAuthenticator(
        registry_of(urls), client, cache_seconds=10, check_timeout=5, clock=clock
    )
    await authenticator.check(ALICE)
    assert counter.most == 100
    counter.most = 0
    clock.now += 9
    await authenticator.check(ALICE)
    while authenticator._refreshing:
        await asyncio.sleep(0.01)
    assert 1 < counter.most <= UNHURRIED_AT_ONCE and checks_of(fake, ALICE) == 200
    await client.aclose()

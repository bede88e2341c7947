"""The connection pool to the Orthanc servers: replaced, once, when an unexpected error breaks out of it."""

import asyncio

import httpx
import pytest

from orthanc_jobs.core.orthanc import OrthancClient, OrthancUnreachable
from tests.unit.fake_orthanc import a_server

SERVER = a_server()


async def test_an_unexpected_error_out_of_the_pool_replaces_it() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError(24, "Too many open files")  # not an httpx error: the pool may be broken
        return httpx.Response(200, json={"Version": "1.10.1"})

    client = OrthancClient(5, transport=httpx.MockTransport(handler))
    first_pool = client._pool(SERVER.url)
    with pytest.raises(OrthancUnreachable, match="connection pool replaced"):
        await client.check_reachable(SERVER, 1)
    assert client.pools_replaced == 1 and client._pool(SERVER.url) is not first_pool
    assert not first_pool.is_closed  # requests still under way on it may finish
    await client.check_reachable(SERVER, 1)  # the next request goes through the new pool
    await client.aclose()
    assert first_pool.is_closed and client._pool(SERVER.url).is_closed


async def test_a_burst_of_errors_out_of_one_pool_replaces_it_once() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.01)  # every request under way on the pool when the errors come
        raise OSError(24, "Too many open files")

    client = OrthancClient(5, transport=httpx.MockTransport(handler))
    answers = await asyncio.gather(
        *(client.check_reachable(SERVER, 1) for _ in range(20)), return_exceptions=True
    )
    assert all(isinstance(answer, OrthancUnreachable) for answer in answers)
    assert client.pools_replaced == 1
    await client.aclose()


async def test_an_action_on_a_connection_orthanc_closed_unanswered_is_sent_once_more() -> None:
    """A kept-alive connection Orthanc closed as it was reused: the action was not read, so it is sent
    again, once, with its body; a second failure is the caller's 503."""
    received: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        received.append(request.content)
        if len(received) in (1, 3, 4):
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        return httpx.Response(200, json={})

    client = OrthancClient(5, transport=httpx.MockTransport(handler))
    answer = await client.send(SERVER, "POST", "/jobs/x/pause", None, body=b"{}")
    assert answer.status_code == 200 and received == [b"{}", b"{}"]
    with pytest.raises(OrthancUnreachable):
        await client.send(SERVER, "POST", "/jobs/x/pause", None, body=b"{}")
    assert len(received) == 4
    await client.aclose()


async def test_each_server_has_its_own_pool_and_only_a_broken_one_is_replaced() -> None:
    """Hundreds of servers: a request looks among its own server's connections only (issue #14)."""
    other = a_server("http://127.0.0.1:8002")

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.port == 8002:
            raise OSError(24, "Too many open files")
        return httpx.Response(200, json={"Version": "1.12.7"})

    client = OrthancClient(5, transport=httpx.MockTransport(handler))
    await client.check_reachable(SERVER, 1)
    kept = client._pool(SERVER.url)
    assert client._pool(other.url) is not kept
    with pytest.raises(OrthancUnreachable, match="connection pool replaced"):
        await client.check_reachable(other, 1)
    assert client.pools_replaced == 1 and client._pool(SERVER.url) is kept
    await client.check_reachable(SERVER, 1)
    await client.aclose()
    assert kept.is_closed

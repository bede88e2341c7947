"""Async client for the Orthanc servers of the cluster (one shared connection pool).

Paths are built only from validated job ids, actions and output keys: nothing a caller typed reaches an
Orthanc server unchecked.
"""

import asyncio
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx
import orjson

from orthanc_jobs.core.model import Server, is_job_id, is_output_key


class OrthancError(Exception):
    """A request to an Orthanc server gave nothing usable.

    OrthancError: the answer was not what was asked (not JSON, not a list)
    ├── OrthancUnreachable: no answer (refused, timed out, broken connection)
    └── OrthancRefused: an answer with an error status (``status``)
    """


class OrthancUnreachable(OrthancError):
    """The server did not answer (refused, timed out, broken connection)."""


class OrthancRefused(OrthancError):
    """The server answered with an error status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class JobListing:
    """Every job a server holds: the jobs it could write, and the ids of those it could not."""

    jobs: list[dict[str, Any]]
    #: Jobs Orthanc lists but answers 400 for: it cannot write their JSON (an asynchronous archive of
    #: nothing, whose progress is NaN, until it ends). They exist all the same.
    unreadable: frozenset[str] = frozenset()


# Reads at once to one server when a listing must be read job by job.
_ONE_BY_ONE_CONCURRENCY = 8


def job_path(job_id: str, tail: str | None = None) -> str:
    if not is_job_id(job_id) or (tail is not None and not is_output_key(tail)):
        raise ValueError(f"refusing to build a path from {job_id!r}, {tail!r}")
    return f"/jobs/{job_id}" if tail is None else f"/jobs/{job_id}/{tail}"


# Seconds an idle connection to an Orthanc server is kept for reuse.
KEEPALIVE_EXPIRY = 0.3
# Requests under way to one server at most (polls, look-ups, forwarded actions and downloads).
MAX_CONNECTIONS_PER_SERVER = 64


class OrthancClient:
    def __init__(self, timeout: float, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._timeout = timeout
        self._transport = transport
        # One pool of connections per server: a request looks for a connection among its own server's
        # only (httpx's pool reads all of its connections for each request: with hundreds of servers in
        # one pool, each poll cost milliseconds; bench/README.md).
        self._pools: dict[str, httpx.AsyncClient] = {}
        # Pools replaced, each with the task that closes it once its requests are done.
        self._retired: dict[asyncio.Task[None], httpx.AsyncClient] = {}
        #: Connection pools replaced because an error broke out of one (see _broken).
        self.pools_replaced = 0

    def _new_pool(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=self._timeout,
            # Idle connections are dropped before Orthanc closes them (1.12's KeepAliveTimeout is 1 s by
            # default; 1.10's HTTP server, civetweb, closes them sooner): an action forwarded (a POST, never
            # sent twice) must not go out on a connection Orthanc is closing at that moment.
            limits=httpx.Limits(
                max_connections=MAX_CONNECTIONS_PER_SERVER,
                max_keepalive_connections=16,
                keepalive_expiry=KEEPALIVE_EXPIRY,
            ),
            transport=self._transport,
            # One client serves every caller: a cookie set for one must never be sent for another.
            cookies=httpx.Cookies(CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))),
        )

    def _broken(self, pool: httpx.AsyncClient, server: Server, error: OSError) -> OrthancUnreachable:
        """An error that is not httpx's came out of ``pool`` (e.g. out of file handles): the pool may have
        lost track of the connections it was opening, and would keep their slots taken for good. The next
        requests get a new pool; the old one is closed once the requests under way on it are done (the
        longest a request may take, ``timeout``), and only the pool in use is replaced (a burst of such
        errors replaces it once)."""
        if self._pools.get(server.url) is pool:
            self._pools[server.url] = self._new_pool()
            self.pools_replaced += 1
            task = asyncio.ensure_future(self._close_later(pool))
            self._retired[task] = pool
            task.add_done_callback(lambda done: self._retired.pop(done, None))
        return OrthancUnreachable(f"{server.url}: {error!r} (connection pool replaced)")

    async def _close_later(self, pool: httpx.AsyncClient) -> None:
        await asyncio.sleep(self._timeout + 1)
        await pool.aclose()

    async def aclose(self) -> None:
        for task, pool in list(self._retired.items()):
            task.cancel()
            await pool.aclose()
        for pool in list(self._pools.values()):
            await pool.aclose()

    def _pool(self, server_url: str) -> httpx.AsyncClient:
        pool = self._pools.get(server_url)
        if pool is None:
            pool = self._pools[server_url] = self._new_pool()
        return pool

    async def _get_json(self, server: Server, path: str, timeout: float | None = None) -> Any | None:
        """GET with the server's own token; None when the server answers 404."""
        pool = self._pool(server.url)
        try:
            response = await _get(pool, server.url + path, {"Authorization": server.token}, timeout)
        except httpx.HTTPError as error:
            raise OrthancUnreachable(f"{server.url}: {error!r}") from error
        except OSError as error:
            raise self._broken(pool, server, error) from error
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise OrthancRefused(f"{server.url}{path} answered {response.status_code}", response.status_code)
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError as error:
            raise OrthancError(f"{server.url}{path} answered something else than JSON") from error

    async def get_job(
        self, server: Server, job_id: str, timeout: float | None = None
    ) -> dict[str, Any] | None:
        content = await self._get_json(server, job_path(job_id), timeout)
        return content if isinstance(content, dict) else None

    async def check_reachable(self, server: Server, timeout: float) -> None:
        """Raises OrthancUnreachable unless the server answers ``GET /system`` within ``timeout``."""
        await self._get_json(server, "/system", timeout)

    async def job_ids(self, server: Server, timeout: float | None = None) -> frozenset[str]:
        """The ids of every job the server holds (``GET /jobs``)."""
        ids = await self._get_json(server, "/jobs", timeout)
        if not isinstance(ids, list):
            raise OrthancError(f"{server.url}/jobs did not answer a list")
        return frozenset(i for i in ids if isinstance(i, str))

    async def query_ids(self, server: Server, timeout: float | None = None) -> frozenset[str]:
        """The query handles the server keeps (``GET /queries``): the queries its process ran lately."""
        ids = await self._get_json(server, "/queries", timeout)
        if not isinstance(ids, list):
            raise OrthancError(f"{server.url}/queries answered something else than a list")
        return frozenset(str(i) for i in ids)

    async def list_jobs(self, server: Server) -> JobListing:
        try:
            content = await self._get_json(server, "/jobs?expand")
        except OrthancRefused as refused:
            if refused.status != 400:
                raise
            # One job Orthanc cannot write makes the whole listing a 400: read them one by one.
            return await self._list_one_by_one(server)
        if not isinstance(content, list):
            raise OrthancError(f"{server.url}/jobs?expand did not answer a list")
        return JobListing([job for job in content if isinstance(job, dict)])

    async def _list_one_by_one(self, server: Server) -> JobListing:
        ids = await self.job_ids(server)
        gate = asyncio.Semaphore(_ONE_BY_ONE_CONCURRENCY)
        unreadable = set()

        async def read(job_id: str) -> dict[str, Any] | None:
            async with gate:
                try:
                    return await self.get_job(server, job_id)
                except OrthancRefused as refused:
                    if refused.status != 400:
                        raise
                    unreadable.add(job_id)
                    return None

        contents = await asyncio.gather(*(read(i) for i in ids if is_job_id(i)))
        return JobListing([job for job in contents if job is not None], frozenset(unreadable))

    async def credentials_accepted(self, server: Server, authorization: str | None, timeout: float) -> bool:
        """Would this Orthanc let a caller with these credentials list its jobs?"""
        pool = self._pool(server.url)
        try:
            response = await _get(pool, server.url + "/jobs", _caller_headers(authorization), timeout)
        except httpx.HTTPError as error:
            raise OrthancUnreachable(f"{server.url}: {error!r}") from error
        except OSError as error:
            raise self._broken(pool, server, error) from error
        if response.status_code in (401, 403):
            return False
        if response.status_code != 200:
            raise OrthancRefused(f"{server.url}/jobs answered {response.status_code}", response.status_code)
        return True

    async def send(
        self,
        server: Server,
        method: str,
        path: str,
        authorization: str | None,
        body: bytes | AsyncIterable[bytes] = b"",
        stream: bool = False,
        *,
        query: bytes = b"",
        content_type: str | None = None,
        accept: str | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """Forward a caller's request to the owner, with the caller's own credentials (and its query string,
        its body's type, the answer's type it accepts, a timeout of its own: a synchronous retrieve lasts as
        long as its transfer). A body that is streamed (a DICOM file) is sent once only."""
        headers = {b"Accept-Encoding": b"identity", **_caller_headers(authorization)}
        if content_type is not None:
            headers[b"Content-Type"] = content_type.encode("latin-1")
        if accept is not None:
            headers[b"Accept"] = accept.encode("latin-1")
        pool = self._pool(server.url)
        url = httpx.URL(server.url + path, query=query) if query else server.url + path
        request = pool.build_request(
            method,
            url,
            headers=headers,
            content=body,
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )
        try:
            if isinstance(body, bytes):
                return await _send(pool, request, stream)
            return await pool.send(request, stream=stream)
        except httpx.HTTPError as error:
            raise OrthancUnreachable(f"{server.url}: {error!r}") from error
        except OSError as error:
            raise self._broken(pool, server, error) from error


async def _get(
    pool: httpx.AsyncClient,
    url: str,
    headers: Mapping[str, str] | Mapping[bytes, bytes],
    timeout: float | None,
) -> httpx.Response:
    timeout_or_default = timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT
    return await _send(pool, pool.build_request("GET", url, headers=headers, timeout=timeout_or_default))


async def _send(pool: httpx.AsyncClient, request: httpx.Request, stream: bool = False) -> httpx.Response:
    """Send, and once more if the server closed the connection without answering: a kept-alive connection
    that Orthanc closed just as it was reused. Orthanc answers every request it reads, so a request it
    closed the connection on without an answer was not done: sending it again (an action too) does
    nothing twice."""
    try:
        return await pool.send(request, stream=stream)
    except httpx.RemoteProtocolError:
        return await pool.send(request, stream=stream)


def _caller_headers(authorization: str | None) -> dict[bytes, bytes]:
    # HTTP headers are Latin-1: a caller's header goes on byte for byte, whatever it holds.
    return {b"Authorization": authorization.encode("latin-1")} if authorization else {}

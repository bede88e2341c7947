"""Looking up a job id the registry does not know yet (a job created a moment ago whose event is on its
way, or an id that does not exist), on every live server, in rounds shared by every caller."""

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from orthanc_jobs.core.background import SharedRuns
from orthanc_jobs.core.model import Job, Server
from orthanc_jobs.core.orthanc import OrthancClient, OrthancError, OrthancRefused
from orthanc_jobs.core.registry import Registry

log = logging.getLogger(__name__)

# Seconds from the start of one lookup round on a server to the next (a lone lookup does not wait).
ROUND_SPACING = 0.05
# Reads at once, per server, of jobs found by lookup rounds.
READS_AT_ONCE = 8


@dataclass(frozen=True)
class Unreadable:
    """A job its owner holds but cannot write as JSON (Orthanc answers 400 for it: the progress of an
    asynchronous archive of nothing is NaN until it runs, for ever if it was cancelled before)."""

    job_id: str
    owner: Server


class OneAtATime:
    """Lets its waiters go one per turn of the event loop, in the order they came."""

    def __init__(self) -> None:
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def turn(self) -> None:
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        if len(self._waiting) == 1:
            asyncio.get_running_loop().call_soon(self._release)
        try:
            await future
        finally:
            if not future.done():  # the caller went away: its place goes to the next
                future.cancel()

    def _release(self) -> None:
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_result(None)
                break
        if self._waiting:
            asyncio.get_running_loop().call_soon(self._release)


#: How a server's ids are listed (e.g. ``OrthancClient.job_ids``: ``GET /jobs``), within a timeout.
Listing = Callable[[Server, float], Awaitable[frozenset[str]]]


class ListingRounds:
    """Which ids (of jobs, of queries) one server holds, asked in rounds: each round is one listing (``GET
    /jobs``) that answers for every id that was waiting when it was sent. One round at a time per server,
    and ids that come while a round is on its way wait for the next one (a job created a millisecond ago is
    in the next listing)."""

    def __init__(
        self, listing: Listing, server: Server, timeout: float, rounds: Counter | None = None
    ) -> None:
        self.server = server
        self._rounds = rounds.labels(server.name) if rounds is not None else None
        self._listing = listing
        self._timeout = timeout
        self._waiting: dict[str, asyncio.Future[bool]] = {}
        self._running: asyncio.Task[None] | None = None
        self._next_round_at = 0.0
        #: Reads of the jobs a round found, at once to this server.
        self.reads = asyncio.Semaphore(READS_AT_ONCE)

    def cancel(self) -> None:
        if self._running is not None:
            self._running.cancel()

    def holds(self, job_id: str) -> asyncio.Future[bool]:
        """True once a round lists the id; False if it does not, or if the server did not answer."""
        future = self._waiting.get(job_id)
        if future is None:
            future = self._waiting[job_id] = asyncio.get_running_loop().create_future()
        if self._running is None:
            self._running = asyncio.ensure_future(self._run())
        return future

    async def _run(self) -> None:
        batch: dict[str, asyncio.Future[bool]] = {}
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                # Rounds are spaced: ids that come meanwhile wait and share the next one. Without
                # spacing, a client flooding unknown ids gets its answers as fast as the service can
                # work, and that is all the service then does.
                await asyncio.sleep(self._next_round_at - loop.time())
                self._next_round_at = loop.time() + ROUND_SPACING
                batch, self._waiting = self._waiting, {}
                if self._rounds is not None:
                    self._rounds.inc()
                try:
                    # A whole deadline (httpx's is per read): a server that trickles its answer is late.
                    async with asyncio.timeout(self._timeout):
                        held = await self._listing(self.server, self._timeout)
                except (OrthancError, TimeoutError) as error:
                    log.debug("lookup round on %s failed: %s", self.server.name, error)
                    held = frozenset()
                for job_id, future in batch.items():
                    if not future.done():
                        future.set_result(job_id in held)
                batch = {}
        finally:
            self._running = None
            for future in (*batch.values(), *self._waiting.values()):
                if not future.done():
                    future.set_result(False)


class RoundsPerServer:
    """Each live server's listing rounds (a server's new process gets rounds of its own)."""

    def __init__(self, listing: Listing, timeout: float, rounds: Counter | None = None) -> None:
        self._listing = listing
        self._timeout = timeout
        self._counter = rounds
        self._by_url: dict[str, ListingRounds] = {}

    def of(self, server: Server) -> ListingRounds:
        rounds = self._by_url.get(server.url)
        if rounds is None or rounds.server is not server:
            rounds = self._by_url[server.url] = ListingRounds(
                self._listing, server, self._timeout, self._counter
            )
        return rounds

    def cancel(self) -> None:
        for rounds in self._by_url.values():
            rounds.cancel()


class Lookups:
    def __init__(
        self,
        registry: Registry,
        client: OrthancClient,
        *,
        timeout: float,
        rounds: Counter | None = None,
        unknown_jobs: Counter | None = None,
    ) -> None:
        self._registry = registry
        self._client = client
        self._lookup_timeout = timeout
        self._unknown_jobs = unknown_jobs
        self._lookups: SharedRuns[Job | Unreadable | None] = SharedRuns()
        self._rounds = RoundsPerServer(client.job_ids, timeout, rounds)
        self._unknown_answers = OneAtATime()

    def stop(self) -> None:
        """Cancel the rounds under way (the service stops)."""
        self._rounds.cancel()

    async def find(self, job_id: str) -> Job | Unreadable | None:
        """Ask the live servers for a job id the registry does not know yet.

        Callers asking for the same id meanwhile share one lookup: a new job polled by many clients at
        once must not become many times as many requests (which then time out, and answer 404). And the
        lookups of different ids share each server's next round (one ``GET /jobs`` for all of them): a
        flood of unknown ids costs the servers one request each per round, not one per id.
        """
        found = await self._lookups.run(job_id, lambda: self._ask_every_server(job_id))
        if found is None:
            if self._unknown_jobs is not None:
                self._unknown_jobs.inc()
            # The answers of a round come all at once; a flood's many 404s go one per turn of the event
            # loop, so that the other callers' requests are served in between.
            await self._unknown_answers.turn()
        return found

    async def _ask_every_server(self, job_id: str) -> Job | Unreadable | None:
        servers = self._registry.live_servers()
        if not servers:
            return None
        unreadable = None
        for answer in asyncio.as_completed([self._ask(server, job_id) for server in servers]):
            server, content = await answer
            if isinstance(content, Unreadable):
                unreadable = content
            elif content is not None:
                return self._registry.apply_snapshot(server, content)
        return unreadable

    async def _ask(self, server: Server, job_id: str) -> tuple[Server, dict[str, Any] | Unreadable | None]:
        """The job, if the server holds it: its next round says whether it does, then one read."""
        rounds = self._rounds.of(server)
        if not await rounds.holds(job_id):
            return server, None
        async with rounds.reads:
            try:
                return server, await self._client.get_job(server, job_id, timeout=self._lookup_timeout)
            except OrthancRefused as refused:
                return server, Unreadable(job_id, server) if refused.status == 400 else None
            except OrthancError:
                return server, None

"""Reading jobs from the Orthanc servers into the registry: polls of unfinished jobs, resynchronisations,
and reads of jobs known only by an event (look-ups of unknown ids are in lookups.py).

With replicas, polls and resynchronisations are the leading replica's (they are not multiplied by the
number of replicas); each replica reads the jobs its own plugin events left without JSON.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from prometheus_client import Histogram

from orthanc_jobs.core.background import BackgroundTasks
from orthanc_jobs.core.model import Job, Server
from orthanc_jobs.core.orthanc import OrthancClient, OrthancError
from orthanc_jobs.core.registry import Registry

log = logging.getLogger(__name__)

# Above this many unfinished jobs on one server, one /jobs?expand is cheaper than one request per job; from 2
# on too, when the server's last listing held at most this many jobs for each unfinished one (its
# JobsHistorySize is small): a request costs the service far more than a job's JSON in an answer.
EXPAND_THRESHOLD = 16
LISTED_PER_UNFINISHED = 8
# Polls and resynchronisations under way at once: with hundreds of servers, a thousand requests started
# together would hold the event loop for as long as they all take, and every client's request behind them.
REQUESTS_AT_ONCE = 32
# Jobs known only by an event without JSON, read at each poll: at most this many per server per poll, and
# this many waiting per server.
READS_PER_POLL = 64
MAX_WAITING_READS = 10_000


class Poller:
    def __init__(
        self,
        registry: Registry,
        client: OrthancClient,
        *,
        poll_interval: float,
        resync_interval: float,
        poll_duration: Histogram | None = None,
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self._registry = registry
        self._client = client
        self._poll_interval = poll_interval
        self._resync_interval = resync_interval
        self._poll_duration = poll_duration
        self._leading = leading
        self._tasks = BackgroundTasks()
        self._to_read: dict[str, set[str]] = {}  # server URL -> ids of jobs to read
        self._gate = asyncio.Semaphore(REQUESTS_AT_ONCE)

    def start(self) -> None:
        # Servers known from the store (a restart of the service): catch up with them at once.
        self._tasks.spawn(self.resync_all())
        self._tasks.every(self._poll_interval, self.poll_unfinished)
        self._tasks.every(self._resync_interval, self.resync_all)

    async def stop(self) -> None:
        await self._tasks.cancel_all()

    def schedule_resync(self, server: Server) -> None:
        """Resynchronise a server that just registered (its HTTP server may open a moment later); the
        leading replica does, when it hears of the registration."""
        if not self._leading():
            return
        self._tasks.spawn(self._resync_with_retries(server))

    async def _resync_with_retries(self, server: Server) -> None:
        delay = 0.1
        while self._registry.server_by_url(server.url) is server and not await self.resync(server):
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._resync_interval)

    async def resync(self, server: Server) -> bool:
        """Read every job of the server and reconcile the registry with it."""
        async with self._gate:
            started_at = time.time()
            try:
                listing = await self._client.list_jobs(server)
            except OrthancError as error:
                log.debug("resync of %s failed: %s", server.name, error)
                return False
        if self._registry.server_by_url(server.url) is server:
            server.listed_jobs = len(listing.jobs) + len(listing.unreadable)
            self._registry.mark_resynchronised(server)
            self._registry.reconcile(server, listing.jobs, started_at, still_held=listing.unreadable)
        return True

    async def resync_all(self) -> None:
        if not self._leading():
            return
        with self._timed("resync"):
            await asyncio.gather(*(self.resync(s) for s in self._registry.live_servers()))

    async def poll_unfinished(self) -> None:
        live = self._registry.live_servers()
        # Only the servers with something to read (with hundreds of servers, a task for each of the others
        # would cost more than the reads themselves).
        await asyncio.gather(*(self._read_scheduled(s) for s in live if self._to_read.get(s.url)))
        if not self._leading():
            return
        unfinished = self._registry.unfinished_by_server()
        with self._timed("poll"):
            await asyncio.gather(
                *(self._poll_server(s, jobs) for s in live if (jobs := unfinished.get(s.url)))
            )

    def _timed(self, kind: str) -> AbstractContextManager[None]:
        return self._poll_duration.labels(kind).time() if self._poll_duration else contextlib.nullcontext()

    async def refresh_job(self, server: Server, job_id: str) -> Job | None:
        """Read one job back from its owner (after an action, which Orthanc reports by no event)."""
        try:
            content = await self._client.get_job(server, job_id)
        except OrthancError as error:
            log.info("refresh of job %s on %s failed: %s", job_id, server.name, error)
            return self._registry.get_job(job_id)
        if content is None:
            return self._registry.get_job(job_id)
        return self._registry.apply_snapshot(server, content)

    def schedule_read(self, server: Server, job_id: str) -> None:
        """Read at the next poll a job known only by an event that came without its JSON (its plugin could
        not read it then, or let it go while the job-service was unreachable)."""
        waiting = self._to_read.setdefault(server.url, set())
        if len(waiting) < MAX_WAITING_READS:
            waiting.add(job_id)

    async def _read_scheduled(self, server: Server) -> None:
        waiting = self._to_read.get(server.url)
        if not waiting:
            return
        now = [waiting.pop() for _ in range(min(READS_PER_POLL, len(waiting)))]
        await asyncio.gather(*(self.refresh_job(server, job_id) for job_id in now))

    async def _poll_server(self, server: Server, unfinished: list[Job]) -> None:
        count = len(unfinished)
        async with self._gate:
            if count > EXPAND_THRESHOLD or (
                count >= 2
                and server.listed_jobs is not None
                and server.listed_jobs <= LISTED_PER_UNFINISHED * count
            ):
                await self._poll_listing(server)
            else:
                await asyncio.gather(*(self.refresh_job(server, job.id) for job in unfinished))

    async def _poll_listing(self, server: Server) -> None:
        """A poll by one ``/jobs?expand``: what it lists is applied as the jobs' own reads would be (what
        it no longer lists waits for the next resynchronisation, which reads the server's whole history)."""
        try:
            listing = await self._client.list_jobs(server)
        except OrthancError as error:
            log.debug("poll of %s failed: %s", server.name, error)
            return
        if self._registry.server_by_url(server.url) is server:
            server.listed_jobs = len(listing.jobs) + len(listing.unreadable)
            for content in listing.jobs:
                self._registry.apply_snapshot(server, content)

"""Replicas of the job-service on one PostgreSQL: the same registry in every replica, one leader.

Each replica answers from its own memory. What one of them changes (a plugin's event, a poll, an action) is
written with its entries in the change log (core/store/postgres.py); every replica follows that log: it is
notified when a write commits, and reads the log again every second in case a notification was missed. It
installs in its registry what the others wrote, and streams every entry's event, its own included, under
the log's number: the same events in the same order on every replica.

Decisions for the whole cluster (a silent server's jobs failed, the history pruned, running jobs polled)
are taken by the replica that holds the lease (``Leadership``): it renews it every 2 s for 10 s; it stops
deciding 2 s before its lease would end by its own clock, and another replica takes the lease once it has
ended by PostgreSQL's. A replica that stops lets it go at once.
"""

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from orthanc_jobs.core.background import BackgroundTasks
from orthanc_jobs.core.eventlog import Event, EventLog
from orthanc_jobs.core.model import Job, Server
from orthanc_jobs.core.registry import Registry
from orthanc_jobs.core.store.postgres import ChangeFeed, ChangeRecord, LogPosition, PostgresStore

log = logging.getLogger(__name__)

LEASE_SECONDS = 10.0
LEASE_RENEWAL = 2.0
# The leader stops deciding this long before its lease ends (by its own clock: renewals may be late).
LEASE_MARGIN = 2.0
# A leader decides only once it has followed the others' changes for this long (after its start, or an
# outage of PostgreSQL): what they wrote meanwhile has been read.
FOLLOWED_BEFORE_DECIDING = 2.0
# The change log is read at least this often, notified or not.
CATCH_UP_INTERVAL = 1.0
READ_BATCH = 5_000
# A read of the log that takes longer means the connection is gone: connect again. (asyncio.timeout, not
# wait_for: on Python 3.11 wait_for can lose a cancellation that comes as the awaited call ends.)
READ_TIMEOUT = 10.0
RECONNECT_DELAY = 1.0
# Jobs whose last streamed state is remembered (an older one written late would only come soon after).
RECENT_JOBS = 20_000


class Leadership:
    """Whether this replica leads, by a lease in PostgreSQL."""

    def __init__(
        self,
        store: PostgresStore,
        holder: str,
        *,
        seconds: float = LEASE_SECONDS,
        margin: float = LEASE_MARGIN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self.holder = holder
        self._seconds = seconds
        self._margin = margin
        self._clock = clock
        self._valid_until = 0.0
        self.term: int | None = None
        self._failing = False
        self._released = 0  # a renewal under way when the lease is let go does not take it back

    def is_leader(self) -> bool:
        return self._clock() < self._valid_until

    async def renew(self) -> None:
        """Take or renew the lease; a failure to reach PostgreSQL lets it lapse on time."""
        started = self._clock()
        released = self._released
        was_leader = self.is_leader()
        try:
            term = await asyncio.to_thread(self._store.hold_lease, self.holder, self._seconds)
            if released != self._released:
                return
        except Exception as error:
            if not self._failing:
                log.warning("the lease of the leading replica cannot be renewed or taken: %r", error)
            self._failing = True
            return
        self._failing = False
        if term is None:
            self._valid_until = 0.0
        else:
            # Counted from before the request: the lease in PostgreSQL ends later than this.
            self._valid_until = started + self._seconds - self._margin
            if not was_leader or term != self.term:
                log.info("this replica (%s) leads the job-service, term %d", self.holder, term)
        if was_leader and term is None:
            log.warning("this replica (%s) no longer leads the job-service", self.holder)
        self.term = term

    async def release(self) -> None:
        self._released += 1
        if self._valid_until:
            self._valid_until = 0.0
            try:
                await asyncio.to_thread(self._store.release_lease, self.holder)
            except Exception as error:
                log.warning("the lease could not be let go (it ends by itself): %r", error)


class Replication:
    """Follows the change log into this replica's registry and event stream."""

    def __init__(
        self,
        store: PostgresStore,
        registry: Registry,
        events: EventLog,
        leadership: Leadership,
        *,
        on_new_server: Callable[[Server], None] = lambda server: None,
        on_installed_job: Callable[[Job, Job | None], None] = lambda job, previous: None,
        feed: ChangeFeed | None = None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._events = events
        self.leadership = leadership
        self._on_new_server = on_new_server
        self._on_installed_job = on_installed_job
        self._feed = feed or ChangeFeed(store.url, store.schema, store.channel)
        self._tasks = BackgroundTasks()
        self._reading = asyncio.Lock()
        self._advanced = asyncio.Event()
        #: The log is followed (connected, listening, read); False while PostgreSQL is out of reach.
        self.connected = False
        self._followed_since: float | None = None
        self._lost = False  # the log could be followed, and no longer can
        self.position = 0
        #: The Timestamp (and whether presumed) of the last entry streamed of each recent job.
        self._last_shown: OrderedDict[str, tuple[str, bool]] = OrderedDict()
        if store.position is not None:
            self._start_at(store.position)

    def _start_at(self, position: LogPosition) -> None:
        self.position = position.last_change
        recent = [Event(event_id, kind, frame) for event_id, kind, frame in position.frames]
        self._events.start_at(position.last_change, position.trimmed_through, recent)

    def is_current(self) -> bool:
        """This replica follows the log, and has for a moment (back from an outage, it reads first what the
        others wrote meanwhile)."""
        followed_since = self._followed_since
        return followed_since is not None and time.monotonic() - followed_since >= FOLLOWED_BEFORE_DECIDING

    def is_leading(self) -> bool:
        """This replica leads and is current: a leader cut off from the others' changes would decide on
        what it has not heard."""
        return self.leadership.is_leader() and self.is_current()

    def start(self) -> None:
        self._tasks.spawn(self._follow())
        self._tasks.spawn(self.leadership.renew())
        self._tasks.every(LEASE_RENEWAL, self.leadership.renew)

    async def stop(self) -> None:
        await self._tasks.cancel_all()
        await self.leadership.release()
        await self._feed.close()

    async def _follow(self) -> None:
        outage_logged = False
        while True:
            try:
                async with asyncio.timeout(READ_TIMEOUT):
                    await self._feed.connect()
                await self.catch_up()
                if outage_logged:
                    log.warning("the change log is followed again (at change %d)", self.position)
                outage_logged = False
                self.connected, self._lost = True, False
                self._followed_since = time.monotonic()
                while True:
                    async with asyncio.timeout(CATCH_UP_INTERVAL + READ_TIMEOUT):
                        await self._feed.wait(CATCH_UP_INTERVAL)
                    await self.catch_up()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.connected, self._lost = False, True
                self._followed_since = None
                if not outage_logged:
                    log.error(
                        "the change log of the replicas cannot be read (%r): this replica answers from what "
                        "it has and catches up once PostgreSQL answers again",
                        error,
                    )
                    outage_logged = True
                await self._feed.close()
                await asyncio.sleep(RECONNECT_DELAY)

    async def catch_up(self) -> None:
        """Read and install every change after ``position``."""
        async with self._reading:
            while True:
                async with asyncio.timeout(READ_TIMEOUT):
                    records = await self._feed.read_since(self.position, READ_BATCH)
                    # Numbers skipped (a write rolled back), or the log trimmed past this replica's position.
                    skipped = not records or records[0].id > self.position + 1
                    trimmed = await self._feed.trimmed_through() if skipped else 0
                if skipped and trimmed > self.position:
                    await self._reload()
                    records = []
                for record in records:
                    self._apply(record)
                self._advanced.set()  # the position moved (or did not): waiters look again
                self._advanced = asyncio.Event()
                if skipped and trimmed > self.position:
                    continue
                if len(records) < READ_BATCH:
                    return

    async def reached(self, position: int, timeout: float) -> bool:
        """Wait until the log is read up to ``position`` (a client saw it through another replica)."""
        if self._lost:
            return self.position >= position  # PostgreSQL away: the position will not move
        deadline = asyncio.get_running_loop().time() + timeout
        while self.position < position:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            try:
                async with asyncio.timeout(remaining):
                    await self._advanced.wait()
            except TimeoutError:
                return self.position >= position
        return True

    def _apply(self, record: ChangeRecord) -> None:
        shown = True
        if record.kind == "job":
            job = record.job()
            shown = self._newest_in_log(job)
            if record.replica != self._store.replica:
                previous = self._registry.get_job(job.id)
                if self._registry.install_job(job):
                    self._store.forget_pending_job(job.id)
                    self._on_installed_job(job, previous)
        elif record.replica == self._store.replica:
            pass  # this replica's own: its memory has it already
        elif record.kind == "removed":
            self._registry.uninstall_job(record.key)
            self._store.forget_pending_job(record.key)
        elif record.kind == "server":
            server = record.server()
            if self._registry.install_server(server):
                self._on_new_server(server)
        if shown and record.frame is not None and record.frame_kind is not None:
            self._events.publish(record.frame_kind, record.frame, record.id)
        else:
            self._events.skip_to(record.id)
        self.position = record.id

    def _newest_in_log(self, job: Job) -> bool:
        """Is this entry of the log newer than the job's last one shown? An older state written late (two
        replicas heard of the job at once) is not streamed after a newer one. Decided from the log alone,
        so that every replica streams the same events; the owner's word after a presumed end is newer."""
        last = self._last_shown.get(job.id)
        if last is not None and job.timestamp < last[0] and not last[1]:
            return False
        self._last_shown[job.id] = (job.timestamp, job.presumed)
        self._last_shown.move_to_end(job.id)
        if len(self._last_shown) > RECENT_JOBS:
            self._last_shown.popitem(last=False)
        return True

    async def _reload(self) -> None:
        """The log was trimmed past this replica's position (it was away long): read the tables again, and
        end the event streams (their clients reconnect and reload: what they missed is gone)."""
        log.warning(
            "this replica was away longer than the change log keeps: it reads the whole registry again"
        )
        servers, jobs = await asyncio.to_thread(self._store.load)
        for server in servers:
            if self._registry.install_server(server):
                self._on_new_server(server)
        present = {job.id for job in jobs}
        for job in jobs:
            self._registry.install_job(job)
        for job in list(self._registry.all_jobs()):
            if job.id not in present and not self._store.is_pending(job.id):
                self._registry.uninstall_job(job.id)  # removed meanwhile (pruned, deleted)
        self._events.close_all()
        if self._store.position is not None:
            self._start_at(self._store.position)

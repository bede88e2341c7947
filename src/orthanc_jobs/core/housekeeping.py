"""Background upkeep of the registry: liveness of servers, writing to the store, pruning the history.

With replicas, only the leading one prunes (the others receive what it removed); liveness is checked by
every replica, and decided by the leader (Registry.check_liveness).
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from orthanc_jobs.core.background import BackgroundTasks
from orthanc_jobs.core.model import ServerStatus
from orthanc_jobs.core.registry import Registry
from orthanc_jobs.core.store import Store

log = logging.getLogger(__name__)

# Changes are written (and reach the other replicas) at most this long after they happen.
FLUSH_INTERVAL = 0.05
PRUNE_INTERVAL = 60.0
# While the history cannot be written (a full disk), one error a minute in the log, not five a second.
WRITE_ERROR_LOG_INTERVAL = 60.0


class Housekeeper:
    def __init__(
        self,
        registry: Registry,
        store: Store,
        *,
        liveness_interval: float,
        history_max_age: float,
        history_max_jobs: int,
        leading: Callable[[], bool] = lambda: True,
        trim_log: Callable[[], int] | None = None,
        current: Callable[[], bool] = lambda: True,
    ) -> None:
        self._registry = registry
        self._store = store
        self._liveness_interval = liveness_interval
        self._history_max_age = history_max_age
        self._history_max_jobs = history_max_jobs
        self._leading = leading
        self._trim_log = trim_log
        # Whether this replica has heard of the others' changes (the servers' heartbeats among them).
        self._current = current
        self._last_liveness_check: float | None = None
        self._tasks = BackgroundTasks()
        # One write at a time, in the order the changes were taken: an older write must never land last.
        self._writing = asyncio.Lock()
        # Group commit: flushes asked for while a write runs are all served by the next one.
        self._flushes_asked = 0
        self._flushes_done = 0
        self._write_failures = 0
        self._write_error_logged_at: float | None = None

    def start(self) -> None:
        self._tasks.every(self._liveness_interval, self.check_liveness)
        self._tasks.every(FLUSH_INTERVAL, self._flush_in_background)
        self._tasks.every(PRUNE_INTERVAL, self.prune)

    async def stop(self) -> None:
        await self._tasks.cancel_all()
        await self.flush()
        self._store.close()

    async def check_liveness(self) -> None:
        now = time.monotonic()
        last, self._last_liveness_check = self._last_liveness_check, now
        if last is not None and now - last > 3 * self._liveness_interval:
            return  # this process was frozen (or starved): its view of the heartbeats is behind for a moment
        if not self._current():
            return  # cut off from the other replicas, which receive heartbeats too: silence means nothing
        for server, status in self._registry.check_liveness():
            level = logging.INFO if status is ServerStatus.ALIVE else logging.WARNING
            log.log(level, "Orthanc server %s (%s) is %s", server.name, server.url, status)
        self._registry.check_stuck()

    async def flush(self) -> None:
        """Write every change noted so far; returns once they are in the store (a route that acknowledges
        plugin events awaits it)."""
        self._flushes_asked += 1
        asked = self._flushes_asked
        async with self._writing:
            if self._flushes_done >= asked:
                return  # a write that started after this call's changes has written them
            covers = self._flushes_asked
            pending = self._store.take_pending()
            if pending:
                write = asyncio.ensure_future(asyncio.to_thread(self._store.write, pending))
                try:
                    # Shielded: cancelled (the service stops), the write still ends before the lock is let go,
                    # so that no later write can land before it.
                    await asyncio.shield(write)
                except asyncio.CancelledError:
                    with contextlib.suppress(Exception):
                        await write
                    if write.exception() is not None:
                        self._store.restore_pending(pending)
                    raise
                except Exception as error:
                    # Nothing is lost: written by the next flush. Who waits for this one learns it failed.
                    self._store.restore_pending(pending)
                    self._write_failed(error)
                    raise
                if self._write_failures:
                    log.warning("the job history is written again, after %d failure(s)", self._write_failures)
                    self._write_failures = 0
            self._flushes_done = covers

    @property
    def writing_fails(self) -> bool:
        """The last write of the history failed (changes are kept in memory until one succeeds)."""
        return self._write_failures > 0

    async def _flush_in_background(self) -> None:
        with contextlib.suppress(Exception):  # logged by _write_failed; tried again at the next tick
            await self.flush()

    def _write_failed(self, error: Exception) -> None:
        self._write_failures += 1
        now = time.monotonic()
        if (
            self._write_error_logged_at is None
            or now - self._write_error_logged_at >= WRITE_ERROR_LOG_INTERVAL
        ):
            self._write_error_logged_at = now
            log.error(
                "the job history cannot be written (%r); %d failure(s) so far: changes are kept in memory "
                "and written once it can be, and plugin events are answered 503 until then",
                error,
                self._write_failures,
            )

    async def prune(self) -> None:
        if not self._leading():
            return
        if self._trim_log is not None:
            try:
                trimmed = await asyncio.to_thread(self._trim_log)
            except Exception as error:  # PostgreSQL away: tried again at the next prune; the history still is
                log.warning("the change log cannot be trimmed now: %r", error)
            else:
                if trimmed:
                    log.info("change log: %d old change(s) forgotten", trimmed)
        pruned = self._registry.prune_history(self._history_max_age, self._history_max_jobs)
        if pruned:
            log.info("history: %d old job(s) forgotten", pruned)

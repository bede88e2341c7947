"""The one place where job and server state changes.

Plugin events, polls, resynchronisations and the API's own actions (a forwarded DELETE) all end here. The
registry runs on one asyncio event loop and needs no lock. It tells every change to its subscribers
(core/changes.py): the store, the event stream.

Over 400 lines on purpose: the rules by which servers and jobs change (registrations, liveness, snapshots,
end states, reconciliation) and the indexes they keep consistent are one piece, and read best together.
"""

import bisect
import heapq
import itertools
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

import orjson

from orthanc_jobs.core.changes import (
    ActionProgress,
    Change,
    JobChanged,
    JobRemoved,
    JobStuck,
    ServerChanged,
    ServerSeen,
    Subscriber,
)
from orthanc_jobs.core.filters import EVERY_JOB, JobQuery
from orthanc_jobs.core.model import (
    TERMINAL_STATES,
    Job,
    JobState,
    Server,
    ServerStatus,
    is_job_id,
    orthanc_timestamp,
    parse_orthanc_time,
)
from orthanc_jobs.core.store import Store

log = logging.getLogger(__name__)

_UNFINISHED_STATES = [str(state) for state in JobState if state not in TERMINAL_STATES]

# A job seen in one of these states has started (ran at least once).
_STARTED_STATES = frozenset({JobState.RUNNING, JobState.SUCCESS})

# Orthanc's ErrorCode for an internal error, used for jobs whose owner lost them.
LOST_JOB_ERROR_CODE = -1


def _same_but_timestamp(old: Job, new: dict[str, Any]) -> bool:
    if old.parsed is not None:
        parsed = old.parsed
        return len(parsed) == len(new) and all(k == "Timestamp" or parsed.get(k) == v for k, v in new.items())
    # A finished job is kept serialised (model.Job): compared so, without parsing it (a resynchronisation
    # reads every job of a server again).
    try:
        return orjson.dumps(dict(new, Timestamp=old.timestamp))[:-1] == old.json_head
    except (TypeError, ValueError, RecursionError):
        return False


_FAILED_WITHOUT_DETAILS = "The job failed; Orthanc had forgotten its details when they were asked for"


def _unknown_job(job_id: str, stamp: str) -> dict[str, Any]:
    """A job known only by an end event (its JSON was gone before its plugin could read it): Orthanc's
    fields, with what is known."""
    return {
        "ID": job_id,
        "Type": "",
        "Priority": 0,
        "Progress": 0,
        "CreationTime": stamp,
        "Timestamp": stamp,
        "EffectiveRuntime": 0.0,
        "ErrorDetails": "orthanc-jobs: only the outcome of this job is known (its server's end event); "
        "Orthanc had forgotten the job (JobsHistorySize) before its JSON could be read",
        "Content": {},
    }


OrderKey = tuple[str, str]
#: The index of every job, in creation order.
ALL = ("", "")


#: Jobs judged one by one between two pauses of a search (page_steps): some 20 ms.
JUDGED_PER_STEP = 10_000
#: The JobQuery field each kind of index answers.
_QUERY_FIELDS = {"state": "states", "type": "types", "server": "server_urls"}
#: Sorted keys, and the positions of a range of them (from the first, to the second excluded).
KeyRange = tuple[list[OrderKey], int, int]


def _copied(ranges: list[KeyRange]) -> Iterable[OrderKey]:
    """The keys of every range, in order, copied: the registry's changes meanwhile leave them alone."""
    if len(ranges) == 1:
        keys, start, stop = ranges[0]
        return keys[start:stop]
    return heapq.merge(*(keys[start:stop] for keys, start, stop in ranges))


def _indexes(job: Job) -> tuple[tuple[str, str], ...]:
    """The sorted lists a job's key belongs to."""
    return (ALL, ("state", job.state), ("type", job.type.lower()), ("server", job.server_url))


def _progress_since(existing: Job | None, job: Job, now: float) -> float | None:
    """When ``job``'s state or progress last changed: kept from ``existing`` if neither did."""
    if existing is not None and existing.state == job.state and existing.progress == job.progress:
        return existing.progress_since
    return now


def _carry(existing: Job | None, job: Job, now: float) -> None:
    """What the job-service learnt of a job, kept in its new state: when its progress last moved, whether
    it started, and how long it waited for its first slot (from its owner's times when it first started:
    its Timestamp less its EffectiveRuntime, less its CreationTime)."""
    job.progress_since = _progress_since(existing, job, now)
    was_started = existing is not None and existing.started
    job.started = was_started or job.state in _STARTED_STATES
    job.waited = existing.waited if existing is not None else None
    if job.started and not was_started and not job.presumed:
        content = job.content
        runtime = content.get("EffectiveRuntime")
        created = parse_orthanc_time(str(content.get("CreationTime", "")))
        stamp = parse_orthanc_time(job.timestamp)
        if created is not None and stamp is not None and isinstance(runtime, int | float):
            job.waited = max(0.0, (stamp - created).total_seconds() - runtime)


def _discard(keys: list[Any], key: Any) -> None:
    position = bisect.bisect_left(keys, key)
    if position < len(keys) and keys[position] == key:
        del keys[position]


class Registry:
    def __init__(
        self,
        store: Store,
        *,
        not_responding_after: float,
        stopped_after: float,
        hide_lost_after: float | None = None,
        stuck_after: float | None = None,
        clock: Callable[[], float] = time.time,
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self._not_responding_after = not_responding_after
        self._stuck_after = stuck_after
        self._stopped_after = stopped_after
        self._hide_lost_after = hide_lost_after
        self._clock = clock
        self._leading = leading
        self._servers: dict[str, Server] = {}
        self._by_incarnation: dict[str, Server] = {}
        self._jobs: dict[str, Job] = {}
        self._by_state: dict[str, set[str]] = defaultdict(set)
        self._by_server: dict[str, set[str]] = defaultdict(set)
        #: Order keys in creation order: of every job (ALL), and of the jobs of each state, type (in lower
        #: case) and server. A page of a listing filtered on one of them is a slice (page_jobs).
        self._sorted: dict[tuple[str, str], list[OrderKey]] = defaultdict(list)
        #: (finished_at, id) of the finished jobs, in that order: the statistics of a period.
        self._finished: list[tuple[float, str]] = []
        #: Jobs per server, state and type: /orthanc-jobs/servers and /metrics without reading every job.
        self._tally: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
        #: Incarnations replaced by another at their URL: one that registers again shares its URL.
        self._replaced: dict[str, str] = {}
        #: Servers whose status changed while this replica did not lead (shown, not told): told once it does.
        self._untold: set[str] = set()
        #: Running jobs told stuck (JobStuck), to tell each change once.
        self._told_stuck: set[str] = set()
        #: A job's progress not seen to change since this process started counts from its start.
        self._started = clock()
        #: Jobs judged one by one between two pauses of a search (page_steps).
        self.judged_per_step = JUDGED_PER_STEP
        #: Told of every change (core/changes.py), in order: the store first, which keeps it.
        self.subscribers: list[Subscriber] = [store.record]
        servers, jobs = store.load()
        for server in servers:
            self._servers[server.url] = server
            self._by_incarnation[server.incarnation] = server
        # Indexed in one pass each (no job-by-job insertion in sorted lists).
        for job in jobs:
            # Kept: anything past Pending ran, or will not wait for a first slot again.
            job.started = job.state != JobState.PENDING
            self._jobs[job.id] = job
            self._by_state[job.state].add(job.id)
            self._by_server[job.server_url].add(job.id)
            self._tally[job.server_url][job.state, job.type] += 1
        for key in sorted(job.order_key for job in jobs):
            for index in _indexes(self._jobs[key[1]]):
                self._sorted[index].append(key)
        self._finished = sorted((job.finished_at, job.id) for job in jobs if job.finished_at is not None)
        # Statuses are not stored: they follow from the last time each server was seen.
        for server in servers:
            server.status = ServerStatus.STOPPED if server.stopped else ServerStatus.ALIVE
        self.check_liveness()

    # ---- servers ---------------------------------------------------------------------------------------

    def register_server(
        self, *, name: str, url: str, incarnation: str, token: str, orthanc_version: str = ""
    ) -> Server:
        """Record a server's (re)start. A new incarnation at a known URL means the old process is gone."""
        now = self._clock()
        previous = self._servers.get(url)
        if self._replaced.get(incarnation) == url:
            log.error(
                "two Orthanc processes register at %s (%s among them) and evict each other: give each server "
                "its own OrthancJobs.ServerUrl (ORTHANC_JOBS_SERVER_URL), where the job-service reaches it",
                url,
                name,
            )
        if previous is not None and previous.incarnation != incarnation:
            self._replaced[previous.incarnation] = url
            self._by_incarnation.pop(previous.incarnation, None)
            self._fail_unfinished_jobs(
                previous,
                f"Orthanc server {previous.name} ({url}) restarted; the job was lost with its process",
            )
        server = Server(
            url=url,
            name=name,
            incarnation=incarnation,
            token=token,
            registered_at=now,
            last_seen=now,
            orthanc_version=orthanc_version,
            # What the previous process at this URL dropped stays shown until this one reports its own.
            gap=previous.gap if previous is not None else None,
        )
        self._servers[url] = server
        self._by_incarnation[incarnation] = server
        self._emit(ServerChanged(server))
        return server

    def server_by_incarnation(self, incarnation: str) -> Server | None:
        return self._by_incarnation.get(incarnation)

    def server_by_url(self, url: str) -> Server | None:
        return self._servers.get(url)

    def mark_seen(self, server: Server) -> None:
        """A heartbeat or a poll answered. A process that said it stopped does not come back."""
        if server.stopped:
            return
        server.last_seen = self._clock()
        self._set_status(server, ServerStatus.ALIVE)
        self._emit(ServerSeen(server))

    def report_gap(self, server: Server, gap: dict[str, Any]) -> None:
        """The server's plugin let go of events while the job-service was unreachable (its queue's bounds):
        jobs of that time may be missing here, and nobody can tell which."""
        if gap == server.gap:
            return
        previous = server.gap or {}
        if (gap.get("DroppedEvents", 0), gap.get("DroppedJobJson", 0)) != (
            previous.get("DroppedEvents", 0),
            previous.get("DroppedJobJson", 0),
        ):
            log.error(
                "Orthanc server %s (%s) dropped %d job event(s) and the JSON of %d job(s) between %s and %s "
                "while the job-service was unreachable (its plugin's QueueSize/QueueBytes): jobs of that "
                "time may be missing or incomplete here",
                server.name,
                server.url,
                gap.get("DroppedEvents", 0),
                gap.get("DroppedJobJson", 0),
                orthanc_timestamp(gap["First"]),
                orthanc_timestamp(gap["Last"]),
            )
        server.gap = gap
        self._emit(ServerChanged(server))

    def resynchronised_within(self, seconds: float) -> list[Server]:
        """The live servers this process listed the jobs of in the last ``seconds``."""
        since = self._clock() - seconds
        return [s for s in self.live_servers() if s.last_resync is not None and s.last_resync >= since]

    def mark_resynchronised(self, server: Server) -> None:
        server.last_resync = self._clock()
        self.mark_seen(server)

    def mark_server_stopped(self, server: Server, why: str = "stopped") -> None:
        """The process said it stops (ORTHANC_STOPPED): for good. Silence alone only sets the status."""
        server.stopped = True
        self._stop(server, why)

    def _set_status(self, server: Server, status: ServerStatus, tell: bool = True) -> None:
        changed = server.status is not status
        server.status = status
        if not tell:
            if changed:
                self._untold.add(server.url)
        elif changed or server.url in self._untold:
            self._untold.discard(server.url)
            self._emit(ServerChanged(server))

    def announce(self, progress: ActionProgress) -> None:
        """Tell the subscribers how far an action on many jobs went (no state of the registry changes)."""
        self._emit(progress)

    def _emit(self, change: Change) -> None:
        for subscriber in self.subscribers:
            subscriber(change)

    def _stop(self, server: Server, why: str) -> None:
        self._set_status(server, ServerStatus.STOPPED)
        self._emit(ServerSeen(server))
        self._fail_unfinished_jobs(
            server, f"Orthanc server {server.name} ({server.url}) {why}; the job was lost with its process"
        )

    def check_liveness(self) -> list[tuple[Server, ServerStatus]]:
        """The one place where silence changes a server's status (heartbeats and polls set it alive).

        A server silent for too long has lost its unfinished jobs; one that is only not responding (frozen,
        overloaded) keeps them. Only the leading replica decides (and tells); the others follow the clock
        for what they show, and receive the leader's decisions.
        """
        changes = []
        now = self._clock()
        deciding = self._leading()
        for server in list(self._servers.values()):
            silence = now - server.last_seen
            if server.status is not ServerStatus.STOPPED and silence >= self._stopped_after:
                self._set_status(server, ServerStatus.STOPPED, tell=deciding)
            elif server.status is ServerStatus.ALIVE and silence >= self._not_responding_after:
                self._set_status(server, ServerStatus.NOT_RESPONDING, tell=deciding)
            if deciding and server.url in self._untold:
                self._set_status(server, server.status)  # seen while following, told now that it leads
            if deciding and server.status is ServerStatus.STOPPED:
                # Also those a replica that led before saw stopped and did not fail (it died meanwhile).
                why = "stopped" if server.stopped else f"stopped answering (silent for {silence:.0f} s)"
                self._fail_unfinished_jobs(
                    server,
                    f"Orthanc server {server.name} ({server.url}) {why}; the job was lost with its process",
                )
            if server.status is not server.reported_status:
                server.reported_status = server.status
                changes.append((server, server.status))
        return changes

    def server_status(self, server: Server) -> ServerStatus:
        if self._by_incarnation.get(server.incarnation) is not server:
            return ServerStatus.STOPPED
        return server.status

    def servers(self) -> list[Server]:
        return sorted(self._servers.values(), key=lambda s: (s.name, s.url))

    def live_servers(self) -> list[Server]:
        return [s for s in self._servers.values() if self.server_status(s) is ServerStatus.ALIVE]

    def job_counts(self, server: Server) -> dict[str, int]:
        counts = dict.fromkeys(JobState, 0)
        for (state, _), count in self._tally.get(server.url, Counter()).items():
            counts[JobState(state)] += count
        return {str(state): count for state, count in counts.items()}

    # ---- jobs ------------------------------------------------------------------------------------------

    def get_job(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def owner(self, job: Job) -> Server | None:
        """The live process that holds the job, if it is still the one that created it."""
        server = self._by_incarnation.get(job.incarnation)
        if server is None or server.status is ServerStatus.STOPPED:
            return None
        return server

    def apply_snapshot(self, server: Server, content: dict[str, Any]) -> Job | None:
        """Apply a job's JSON as its owner wrote it; older snapshots than the one held are ignored."""
        job_id = content.get("ID")
        if not isinstance(job_id, str) or not is_job_id(job_id):
            return None
        state = content.get("State")
        if state not in JobState.__members__.values():
            return None
        if self._by_incarnation.get(server.incarnation) is not server:
            return self._jobs.get(job_id)  # a late answer of a process replaced since
        if server.stopped and state not in TERMINAL_STATES:
            return self._jobs.get(job_id)  # a late answer of a process that said it stopped
        timestamp = str(content.get("Timestamp", ""))
        existing = self._jobs.get(job_id)
        if existing is not None:
            if existing.server_url != server.url or existing.incarnation != server.incarnation:
                # A job never moves between servers, nor between processes (each starts with no job):
                # a snapshot claiming so is ignored.
                return existing
            if existing.incarnation == server.incarnation and not existing.presumed:
                if timestamp < existing.timestamp:
                    return existing
                if not existing.history_only and _same_but_timestamp(existing, content):
                    return existing  # a poll that found nothing new: no work
        return self._replace(existing, server.url, server.incarnation, content)

    def apply_terminal_event(
        self, server: Server, job_id: str, state: JobState, event_time: float | None = None
    ) -> Job | None:
        """A completion event whose JSON could not be read (Orthanc forgot the job before its plugin read
        it): keep what is known, with the outcome; a job not known at all is recorded with its outcome."""
        existing = self._jobs.get(job_id)
        if existing is not None and existing.server_url != server.url:
            return None
        if existing is not None and existing.is_terminal and not existing.presumed:
            return existing  # the owner's own word on how it ended is known already
        if existing is None and not is_job_id(job_id):
            return None
        # When the event happened, on the plugin's clock: the clock of Orthanc's machine, as its Timestamps.
        stamp = orthanc_timestamp(event_time if event_time is not None else self._clock())
        base = existing.content if existing is not None else _unknown_job(job_id, stamp)
        content = dict(
            base,
            State=str(state),
            ErrorCode=0 if state is JobState.SUCCESS else LOST_JOB_ERROR_CODE,
            ErrorDescription="Success" if state is JobState.SUCCESS else _FAILED_WITHOUT_DETAILS,
            CompletionTime=stamp,
            # Later than any snapshot read before the job ended: a late poll answer cannot undo the end.
            Timestamp=max(str(base.get("Timestamp", "")), stamp),
        )
        if state is JobState.SUCCESS:
            content["Progress"] = 100
        content.pop("EstimatedTimeOfArrival", None)
        incarnation = existing.incarnation if existing is not None else server.incarnation
        return self._replace(existing, server.url, incarnation, content, history_only=existing is None)

    def reconcile(
        self,
        server: Server,
        contents: Iterable[dict[str, Any]],
        started_at: float,
        still_held: Iterable[str] = (),
    ) -> None:
        """Full resynchronisation: ``contents`` is everything the server listed at ``started_at``, and
        ``still_held`` the ids of jobs it listed without being able to write them."""
        listed = set(still_held)
        for content in contents:
            job = self.apply_snapshot(server, content)
            if job is not None:
                listed.add(job.id)
        for job_id in list(self._by_server.get(server.url, ())):
            job = self._jobs[job_id]
            if job_id in listed or job.incarnation != server.incarnation or job.first_seen >= started_at:
                continue
            if not job.is_terminal:
                self._fail_job(job, f"Orthanc server {server.name} ({server.url}) no longer knows this job")
            elif not job.history_only:
                # Orthanc forgot it (JobsHistorySize): it stays here, as history.
                self._replace(
                    job,
                    job.server_url,
                    job.incarnation,
                    job.content,
                    history_only=True,
                    presumed=job.presumed,
                )

    def remove_job(self, job_id: str) -> None:
        job = self._jobs.get(job_id)
        if job is not None:
            self._swap(job, None)
            self._emit(JobRemoved(job_id))

    def unfinished_by_server(self) -> dict[str, list[Job]]:
        """The unfinished jobs of each server's current process, by server URL: one pass for every poll
        (asking ``unfinished_jobs`` of each of hundreds of servers would read them all for each)."""
        found: dict[str, list[Job]] = defaultdict(list)
        for state in _UNFINISHED_STATES:
            for job_id in self._by_state.get(state, ()):
                job = self._jobs[job_id]
                server = self._servers.get(job.server_url)
                if server is not None and job.incarnation == server.incarnation:
                    found[job.server_url].append(job)
        return found

    def unfinished_jobs(self, server: Server) -> list[Job]:
        # From the (small) sets of unfinished states, not from all the server's jobs: this runs every poll.
        return [
            job
            for state in _UNFINISHED_STATES
            for job_id in self._by_state.get(state, ())
            if (job := self._jobs[job_id]).server_url == server.url and job.incarnation == server.incarnation
        ]

    def stuck_since(self, job: Job) -> float | None:
        """When a running job's progress last moved, if that is longer ago than ``stuck_after`` (else
        None): a transfer to a modality that stopped answering, a job waiting on something that never comes.
        """
        if self._stuck_after is None or job.state != JobState.RUNNING:
            return None
        since = job.progress_since if job.progress_since is not None else self._started
        return since if self._clock() - since >= self._stuck_after else None

    def stuck_jobs(self) -> list[Job]:
        return [
            job
            for job_id in self._by_state.get(JobState.RUNNING, ())
            if self.stuck_since(job := self._jobs[job_id]) is not None
        ]

    def check_stuck(self) -> None:
        """Tell the jobs that became stuck, and those told stuck that moved again or ended (JobStuck).
        Only the leading replica tells; every replica shows what it sees (``stuck_since``)."""
        if not self._leading():
            return
        stuck = {job.id: job for job in self.stuck_jobs()}
        for job_id in self._told_stuck - stuck.keys():
            self._told_stuck.discard(job_id)
            job = self._jobs.get(job_id)
            if job is not None:
                self._emit(JobStuck(job, stuck=False))
        for job_id in stuck.keys() - self._told_stuck:
            self._told_stuck.add(job_id)
            job = stuck[job_id]
            server = self._servers.get(job.server_url)
            log.warning(
                "job %s (%s) on %s has not moved for %.0f s: stuck",
                job_id,
                job.type,
                server.name if server is not None else job.server_url,
                self._clock() - (job.progress_since or self._started),
            )
            self._emit(JobStuck(job, stuck=True))

    def oldest_pending(self) -> Job | None:
        """The pending job created first (Orthanc's CreationTime), if any."""
        pending = self._by_state.get(JobState.PENDING)
        if not pending:
            return None
        return min((self._jobs[job_id] for job_id in pending), key=lambda job: job.order_key)

    def list_jobs(self, query: JobQuery = EVERY_JOB) -> list[Job]:
        """The jobs that match ``query``, in creation order."""
        return self.page_jobs(query)[1]

    def _is_hidden(self, job: Job, hidden_before: float) -> bool:
        """A job of a process that is gone, finished (or lost) long enough ago, is no longer listed."""
        return job.finished_at is not None and job.finished_at < hidden_before and self.owner(job) is None

    def is_history_only(self, job: Job) -> bool:
        """The job is only in the job-service's history: its owner forgot it, or the process is gone."""
        return job.history_only or self.owner(job) is None

    def prune_history(self, max_age: float, max_jobs: int) -> int:
        """Forget history-only jobs finished more than ``max_age`` seconds ago, and the oldest beyond
        ``max_jobs`` jobs in all. Jobs their owner still holds are kept (a resync would bring them back)."""
        history = sorted(
            (job for job in self._jobs.values() if job.finished_at is not None and self.is_history_only(job)),
            key=lambda job: job.finished_at or 0.0,
        )
        too_old = self._clock() - max_age
        excess = max(0, len(self._jobs) - max_jobs)
        doomed = [job for n, job in enumerate(history) if n < excess or (job.finished_at or 0.0) < too_old]
        for job in doomed:
            self.remove_job(job.id)
        return len(doomed)

    def page_jobs(
        self, query: JobQuery = EVERY_JOB, *, offset: int = 0, limit: int | None = None
    ) -> tuple[int, list[Job]]:
        """``list_jobs``' jobs from ``offset``, at most ``limit`` of them, and how many there are in all.

        Read from the smallest sorted index the query names (its ids, or the keys of its states, types or
        servers: several values' keys merged), within its creation times; a query that names nothing else
        is a slice of it. Other criteria are judged job by job, as are jobs hidden after a while
        (``hide_lost_after``): then every listing reads what matches."""
        *_, page = self.page_steps(query, offset=offset, limit=limit)
        assert page is not None  # the last step is the page
        return page

    def page_steps(
        self, query: JobQuery = EVERY_JOB, *, offset: int = 0, limit: int | None = None
    ) -> Iterator[tuple[int, list[Job]] | None]:
        """``page_jobs`` in steps: where jobs are judged one by one, a pause (None) every
        ``judged_per_step`` of them, for the caller to let the event loop answer others meanwhile (a search
        of a million jobs takes seconds), then the page. The registry may change between two steps: each
        job is judged as it is when it is read."""
        end = None if limit is None else offset + limit
        ranges, rest = self._narrowest(query)
        if rest == EVERY_JOB and self._hide_lost_after is None:
            size = sum(stop - start for _, start, stop in ranges)
            if len(ranges) == 1:
                keys, start, stop = ranges[0]
                last = stop if end is None else min(stop, start + end)
                yield size, [self._jobs[key[1]] for key in keys[start + offset : last]]
                return
            merged = heapq.merge(*(itertools.islice(keys, start, stop) for keys, start, stop in ranges))
            yield size, [self._jobs[key[1]] for key in itertools.islice(merged, offset, end)]
            return
        hidden_before = None if self._hide_lost_after is None else self._clock() - self._hide_lost_after
        matching = []
        for number, key in enumerate(_copied(ranges), start=1):
            # Changed since the ranges were read (a pause before): judged whole, as it is now.
            job = self._jobs.get(key[1])
            if (
                job is not None
                and job.order_key == key
                and query.matches(job)
                and (hidden_before is None or not self._is_hidden(job, hidden_before))
            ):
                matching.append(job)
            if number % self.judged_per_step == 0:
                yield None
        yield len(matching), matching[offset:end]

    def _narrowest(self, query: JobQuery) -> tuple[list[KeyRange], JobQuery]:
        """The ranges of sorted keys that hold every job matching ``query`` (the fewest keys the indexes
        give), and the criteria left to judge job by job."""
        lists: list[list[OrderKey]]
        if query.ids is not None:
            lists = [sorted(job.order_key for job_id in query.ids if (job := self._jobs.get(job_id)))]
            rest = replace(query, ids=None)
        else:
            chosen: tuple[int, str, list[list[OrderKey]]] | None = None
            indexed = (("state", query.states), ("type", query.types), ("server", query.server_urls))
            for kind, values in indexed:
                if values is None:
                    continue
                found = [keys for value in values if (keys := self._sorted.get((kind, value)))]
                size = sum(map(len, found))
                if chosen is None or size < chosen[0]:
                    chosen = (size, kind, found)
            if chosen is None:
                lists, rest = [self._sorted[ALL]], query
            else:
                lists, rest = chosen[2], replace(query, **{_QUERY_FIELDS[chosen[1]]: None})
        created = query.created
        if created is None:
            return [(keys, 0, len(keys)) for keys in lists], rest
        ranges = [
            (
                keys,
                bisect.bisect_left(keys, (created.start, "")),
                len(keys) if created.end is None else bisect.bisect_left(keys, (created.end, "")),
            )
            for keys in lists
        ]
        return ranges, replace(rest, created=None)

    def finished_since(self, since: float) -> list[Job]:
        """Jobs that finished (as far as the job-service saw) at ``since`` or later, oldest end first."""
        start = bisect.bisect_left(self._finished, (since, ""))
        return [self._jobs[job_id] for _, job_id in self._finished[start:]]

    def created_since(self, stamp: str) -> list[Job]:
        """Jobs whose CreationTime (Orthanc's format, UTC) is ``stamp`` or later, in creation order."""
        keys = self._sorted[ALL]
        return [self._jobs[key[1]] for key in keys[bisect.bisect_left(keys, (stamp, "")) :]]

    def all_jobs(self) -> Iterable[Job]:
        return self._jobs.values()

    def tally(self) -> Iterator[tuple[str, str, str, int]]:
        """(server URL, state, type, number of jobs), for each combination that has jobs."""
        for server_url, counts in self._tally.items():
            for (state, job_type), count in counts.items():
                yield server_url, state, job_type, count

    def __len__(self) -> int:
        return len(self._jobs)

    # ---- what another replica wrote ----------------------------------------------------------------------

    def install_job(self, job: Job) -> bool:
        """A job as another replica wrote it; an older state than the one held (by its owner's Timestamp)
        is not installed. Not told to the subscribers: it is written and streamed already."""
        existing = self._jobs.get(job.id)
        # As apply_snapshot: the owner's own word replaces what was presumed, whatever its Timestamp.
        if existing is not None and existing.timestamp > job.timestamp and not existing.presumed:
            return False
        _carry(existing, job, self._clock())
        self._swap(existing, job)
        return True

    def uninstall_job(self, job_id: str) -> None:
        job = self._jobs.get(job_id)
        if job is not None:
            self._swap(job, None)

    def install_server(self, server: Server) -> bool:
        """A server as another replica wrote it; True if it is a process new here (a new incarnation).

        A server's status follows from when it was last seen, here as on every replica; the jobs of the
        process it replaced were failed by the replica that saw it register."""
        existing = self._servers.get(server.url)
        if existing is not None and existing.incarnation == server.incarnation:
            existing.last_seen = max(existing.last_seen, server.last_seen)
            existing.stopped = existing.stopped or server.stopped
            existing.gap = server.gap if server.gap is not None else existing.gap
            existing.orthanc_version = server.orthanc_version or existing.orthanc_version
            self._follow_clock(existing)
            return False
        if existing is not None:
            if server.registered_at < existing.registered_at:
                return False  # the row of a process replaced since, written late
            self._replaced[existing.incarnation] = server.url
            self._by_incarnation.pop(existing.incarnation, None)
        self._servers[server.url] = server
        self._by_incarnation[server.incarnation] = server
        self._follow_clock(server)
        return True

    def _follow_clock(self, server: Server) -> None:
        silence = self._clock() - server.last_seen
        if server.stopped or silence >= self._stopped_after:
            status = ServerStatus.STOPPED
        elif silence >= self._not_responding_after:
            status = ServerStatus.NOT_RESPONDING
        else:
            status = ServerStatus.ALIVE
        self._set_status(server, status, tell=False)

    # ---- internals -------------------------------------------------------------------------------------

    def _fail_unfinished_jobs(self, server: Server, reason: str) -> None:
        for job in self.unfinished_jobs(server):
            self._fail_job(job, reason)

    def _fail_job(self, job: Job, reason: str) -> None:
        now = orthanc_timestamp(self._clock())
        content = dict(
            job.content,
            State=str(JobState.FAILURE),
            ErrorCode=LOST_JOB_ERROR_CODE,
            ErrorDescription=reason,
            CompletionTime=now,
            Timestamp=now,
        )
        content.pop("EstimatedTimeOfArrival", None)
        # A lost job keeps the incarnation that created it, even once a new one holds the URL.
        self._replace(job, job.server_url, job.incarnation, content, history_only=True, presumed=True)

    def _replace(
        self,
        existing: Job | None,
        server_url: str,
        incarnation: str,
        content: dict[str, Any],
        history_only: bool = False,
        presumed: bool = False,
    ) -> Job:
        now = self._clock()
        terminal = content["State"] in TERMINAL_STATES
        finished_at = None
        if terminal:
            finished_at = existing.finished_at if existing is not None and existing.finished_at else now
        job = Job.from_content(
            content,
            server_url=server_url,
            incarnation=incarnation,
            first_seen=existing.first_seen if existing is not None else now,
            finished_at=finished_at,
            history_only=history_only,
            presumed=presumed,
        )
        _carry(existing, job, now)
        self._swap(existing, job)
        self._emit(JobChanged.of(job, existing))
        return job

    def _swap(self, old: Job | None, new: Job | None) -> None:
        """``new`` in place of ``old`` in every index (either may be None). A sorted list is touched only
        where the job's key or its value there changes: most changes are of state, in place."""
        if old is not None:
            del self._jobs[old.id]
            self._by_state[old.state].discard(old.id)
            self._by_server[old.server_url].discard(old.id)
            counts = self._tally[old.server_url]
            counts[old.state, old.type] -= 1
            if counts[old.state, old.type] <= 0:
                del counts[old.state, old.type]
        if new is not None:
            self._jobs[new.id] = new
            self._by_state[new.state].add(new.id)
            self._by_server[new.server_url].add(new.id)
            self._tally[new.server_url][new.state, new.type] += 1
        before = _indexes(old) if old is not None else ()
        after = _indexes(new) if new is not None else ()
        moved = old is None or new is None or old.order_key != new.order_key
        if old is not None:
            for index in before:
                if moved or index not in after:
                    _discard(self._sorted[index], old.order_key)
        if new is not None:
            for index in after:
                if moved or index not in before:
                    bisect.insort(self._sorted[index], new.order_key)
        ended = (old.finished_at, old.id) if old is not None and old.finished_at is not None else None
        ends = (new.finished_at, new.id) if new is not None and new.finished_at is not None else None
        if ended != ends:
            if ended is not None:
                _discard(self._finished, ended)
            if ends is not None:
                bisect.insort(self._finished, ends)

"""Actions on many jobs at once (``POST /orthanc-jobs/actions``): cancel, pause, resume, resubmit or delete
every job a filter matches.

A plan says, before anything is sent, which jobs the action would reach and which their state or owner
refuses (a dry run answers only that). A run sends the action to each job's owner, a few at once and at a
bounded rate, judging each job's state again just before (it may have moved since the plan), and keeps a
result per job: done, refused (why: the state, the owner's own answer), or owner unreachable. Its progress
is told to the registry's subscribers (``ActionProgress``): the event stream shows it on every replica.
"""

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from orthanc_jobs.core.changes import ActionProgress
from orthanc_jobs.core.model import ACTION_STATES, Job, JobAction, JobState, Server, orthanc_timestamp
from orthanc_jobs.core.registry import Registry

log = logging.getLogger(__name__)

__all__ = ["BULK_ACTIONS", "BulkAction", "BulkActions", "Outcome", "Plan", "plan"]

#: The actions of one job's route, and ``delete`` (``DELETE /jobs/{id}``, Orthanc 1.12.2 and later).
DELETE = "delete"
BULK_ACTIONS = (*(str(action) for action in JobAction), DELETE)
_DELETE_STATES = frozenset({JobState.SUCCESS, JobState.FAILURE})
#: The first Orthanc that deletes a job (DELETE /jobs/{id}).
_DELETE_SINCE = (1, 12, 2)
#: Results kept per action for its answers and its last event.
MAX_KEPT_ACTIONS = 20
# Progress is told at most this often (seconds), and once at the end.
PROGRESS_EVERY = 0.5
#: Results in the last event of a run (the rest by GET /orthanc-jobs/actions/{id}): every stream client and,
#: with replicas, the change log receive it.
MAX_RESULTS_IN_EVENT = 1000


class Outcome(StrEnum):
    DONE = "done"
    REFUSED = "refused"
    UNREACHABLE = "unreachable"


#: Sends the action to a job's owner: (HTTP status, the owner's message); raises OSError-like errors
#: (the caller's OrthancError) when the owner does not answer.
Perform = Callable[[Server, Job], Awaitable[tuple[int, str]]]


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split("."):
        digits = "".join(c for c in part if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def refusal(registry: Registry, action: str, job: Job) -> str | None:
    """Why ``action`` cannot be done to ``job`` as it is now (None: it can be sent to its owner)."""
    states = _DELETE_STATES if action == DELETE else ACTION_STATES[JobAction(action)]
    if job.state not in states:
        return (
            f"the job is {job.state}: Orthanc can {action} only a job that is {' or '.join(sorted(states))}"
        )
    owner = registry.owner(job)
    if owner is None or registry.is_history_only(job):
        return "only the history holds this job: the Orthanc process that ran it is gone or forgot it"
    version = _version(owner.orthanc_version)
    # A version without numbers ("mainline", a build of Orthanc's default branch) is newer than any release.
    if action == DELETE and version and version < _DELETE_SINCE:
        return (
            f"its server {owner.name} runs Orthanc {owner.orthanc_version}: DELETE /jobs/{{id}} needs 1.12.2 "
            "or later"
        )
    return None


@dataclass
class Plan:
    """What an action on these jobs would do: the jobs it would reach, and those refused, with why."""

    action: str
    accepted: list[Job]
    refused: list[tuple[Job, str]]

    def summary(self, examples: int = 100) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for _, reason in self.refused:
            reasons[reason] = reasons.get(reason, 0) + 1
        return {
            "Action": self.action,
            "Matching": len(self.accepted) + len(self.refused),
            "Accepted": len(self.accepted),
            "Refused": len(self.refused),
            # How many for each reason, and the first jobs refused (the rest by their count).
            "RefusedReasons": [{"Reason": reason, "Count": count} for reason, count in reasons.items()],
            "RefusedJobs": [
                {"ID": job.id, "State": job.state, "Reason": reason}
                for job, reason in self.refused[:examples]
            ],
        }


def plan(registry: Registry, action: str, jobs: Iterable[Job]) -> Plan:
    if action not in BULK_ACTIONS:
        raise ValueError(f"unknown action {action!r}; actions are {', '.join(BULK_ACTIONS)}")
    accepted, refused = [], []
    for job in jobs:
        reason = refusal(registry, action, job)
        if reason is None:
            accepted.append(job)
        else:
            refused.append((job, reason))
    return Plan(action, accepted, refused)


@dataclass
class BulkAction:
    """One run: its plan, its results as they come, and whether it ended."""

    id: str
    plan: Plan
    created_at: float
    total: int = 0
    refused_beforehand: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)
    state: str = "Running"
    completed_at: float | None = None
    cancelled: bool = False

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(map(str, Outcome), 0)
        for result in self.results:
            counts[result["Result"]] += 1
        return counts

    def summary(self, with_results: bool = True, max_results: int | None = None) -> dict[str, Any]:
        counts = self.counts()
        answer: dict[str, Any] = {
            "ID": self.id,
            "Action": self.plan.action,
            "State": self.state,
            "CreationTime": orthanc_timestamp(self.created_at),
            "CompletionTime": orthanc_timestamp(self.completed_at) if self.completed_at else None,
            "Total": self.total,
            "RefusedBeforehand": self.refused_beforehand,
            "Processed": len(self.results),
            "Done": counts[Outcome.DONE],
            "Refused": counts[Outcome.REFUSED],
            "Unreachable": counts[Outcome.UNREACHABLE],
        }
        if with_results:
            answer["Results"] = self.results[:max_results]
            if max_results is not None and len(self.results) > max_results:
                answer["ResultsTruncated"] = True  # the whole list: GET /orthanc-jobs/actions/{id}
        return answer


class BulkActions:
    """The runs of this replica: started, followed, the last few kept."""

    def __init__(
        self,
        registry: Registry,
        *,
        rate: float,
        concurrency: int = 4,
        max_running: int = 4,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        self._interval = 1.0 / rate
        self._concurrency = concurrency
        self.max_running = max_running
        self._clock = clock
        self._actions: OrderedDict[str, BulkAction] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    def running(self) -> int:
        return sum(1 for action in self._actions.values() if action.state == "Running")

    def get(self, action_id: str) -> BulkAction | None:
        return self._actions.get(action_id)

    def recent(self) -> list[BulkAction]:
        return list(reversed(self._actions.values()))

    def start(
        self, plan: Plan, perform: Perform, after: Callable[[Server, str], Awaitable[Any]]
    ) -> BulkAction:
        """Run ``plan`` in the background; ``after(owner, job_id)`` once an action was accepted (to read
        the job back: Orthanc reports a pause or a resume by no event)."""
        action = BulkAction(
            id=str(uuid.uuid4()),
            plan=plan,
            created_at=self._clock(),
            total=len(plan.accepted),
            refused_beforehand=len(plan.refused),
        )
        self._actions[action.id] = action
        # The oldest ended ones go first; a long run stays kept however many short ones came after it.
        ended = [kept.id for kept in self._actions.values() if kept.state != "Running"]
        for action_id in ended[: max(0, len(self._actions) - MAX_KEPT_ACTIONS)]:
            del self._actions[action_id]
        task = asyncio.get_running_loop().create_task(self._run(action, perform, after))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._tell(action, final=False)
        return action

    def cancel(self, action: BulkAction) -> None:
        action.cancelled = True

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(
        self, action: BulkAction, perform: Perform, after: Callable[[Server, str], Awaitable[Any]]
    ) -> None:
        slots = asyncio.Semaphore(self._concurrency)
        told = self._clock()
        pending: set[asyncio.Task[None]] = set()
        try:
            for job in action.plan.accepted:
                if action.cancelled:
                    break
                await slots.acquire()
                task = asyncio.create_task(self._one(action, job.id, perform, after))
                pending.add(task)
                task.add_done_callback(pending.discard)
                task.add_done_callback(lambda _: slots.release())
                if self._clock() - told >= PROGRESS_EVERY:
                    told = self._clock()
                    self._tell(action, final=False)
                await asyncio.sleep(
                    self._interval
                )  # the bound on the rate: the owners are hospitals' servers
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        finally:
            for task in pending:
                task.cancel()
            action.state = "Cancelled" if action.cancelled else "Done"
            action.completed_at = self._clock()
            # Its results say what was done: the jobs it was planned on need not stay in memory.
            action.plan.accepted.clear()
            action.plan.refused.clear()
            counts = action.counts()
            log.info(
                "bulk %s %s: %d done, %d refused, %d owner unreachable, %d refused beforehand",
                action.plan.action,
                action.state.lower(),
                counts[Outcome.DONE],
                counts[Outcome.REFUSED],
                counts[Outcome.UNREACHABLE],
                len(action.plan.refused),
            )
            self._tell(action, final=True)

    async def _one(
        self,
        action: BulkAction,
        job_id: str,
        perform: Perform,
        after: Callable[[Server, str], Awaitable[Any]],
    ) -> None:
        job = self._registry.get_job(job_id)
        if job is None:
            action.results.append(_result(job_id, Outcome.REFUSED, None, "the job is no longer known"))
            return
        reason = refusal(self._registry, action.plan.action, job)
        owner = self._registry.owner(job)
        if reason is not None or owner is None:
            action.results.append(_result(job_id, Outcome.REFUSED, None, reason or "its owner is gone"))
            return
        try:
            status, message = await perform(owner, job)
        except Exception as error:  # the owner did not answer (OrthancError), whatever the cause
            action.results.append(
                _result(
                    job_id, Outcome.UNREACHABLE, None, f"Orthanc server {owner.name} did not answer: {error}"
                )
            )
            return
        if status >= 400:
            action.results.append(_result(job_id, Outcome.REFUSED, status, message))
            return
        action.results.append(_result(job_id, Outcome.DONE, status, ""))
        try:
            await after(owner, job_id)
        except Exception:
            log.exception("reading job %s back after a bulk %s failed", job_id, action.plan.action)

    def _tell(self, action: BulkAction, final: bool) -> None:
        data = orjson.dumps(action.summary(with_results=final, max_results=MAX_RESULTS_IN_EVENT))
        self._registry.announce(ActionProgress(action.id, data))


def _result(job_id: str, outcome: Outcome, status: int | None, reason: str) -> dict[str, Any]:
    return {"ID": job_id, "Result": str(outcome), "HttpStatus": status, "Reason": reason}

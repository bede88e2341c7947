"""Statistics for the dashboard, from the registry: jobs ended per server, jobs created per period by state
and type, and where the time of the jobs of each type went (waiting for a slot, running)."""

import asyncio
import math
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from orthanc_jobs import SERVICE_PREFIX
from orthanc_jobs.api.context import Authorized, Services
from orthanc_jobs.api.responses import OrjsonResponse
from orthanc_jobs.core.errors import BadRequest
from orthanc_jobs.core.model import Job, orthanc_timestamp, parse_orthanc_time

router = APIRouter(prefix=SERVICE_PREFIX, tags=["Job-service"])

# Buckets one statistics answer may hold (the dashboard asks for at most 60).
MAX_STATS_BUCKETS = 1000
Bucket = Annotated[int, Query(ge=10, le=86_400, description="Seconds per bucket")]
Window = Annotated[int, Query(ge=60, le=31 * 86_400, description="Seconds back from now")]
PERCENTILES = (50, 90, 99)


def _first_bucket(bucket: int, window: int, now: float) -> int:
    if window // bucket > MAX_STATS_BUCKETS:
        raise BadRequest(f"{window // bucket} buckets asked for: at most {MAX_STATS_BUCKETS} (raise bucket=)")
    return int((now - window) // bucket) * bucket


async def _paused(services: Services, jobs: list[Job]) -> AsyncIterator[Job]:
    """``jobs``, the event loop answering others every ``judged_per_step`` of them: a month of a busy
    cluster's jobs is read in seconds, not in one step that would hold every request and plugin event."""
    for number, job in enumerate(jobs, start=1):
        yield job
        if number % services.registry.judged_per_step == 0:
            await asyncio.sleep(0)


def _iso(start: int) -> str:
    return datetime.fromtimestamp(start, UTC).isoformat()


@router.get("/stats", summary="Jobs completed and failed per server, over time")
async def completion_stats(services: Authorized, bucket: Bucket = 60, window: Window = 3600) -> Response:
    registry = services.registry
    now = datetime.now(UTC).timestamp()
    first = _first_bucket(bucket, window, now)
    names = {server.url: server.name for server in registry.servers()}
    counts: dict[str, dict[int, dict[str, int]]] = defaultdict(
        lambda: defaultdict(lambda: {"Success": 0, "Failure": 0})
    )
    for job in registry.finished_since(first):
        start = int((job.finished_at or now) // bucket) * bucket
        counts[names.get(job.server_url, job.server_url)][start][job.state] += 1
    series = {
        name: [{"Time": _iso(start), **counts[name][start]} for start in range(first, int(now) + 1, bucket)]
        for name in sorted(set(names.values()) | set(counts))
    }
    return OrjsonResponse({"Bucket": bucket, "Window": window, "Servers": series})


@router.get("/stats/jobs", summary="Jobs created per period, by their state now and their type")
async def created_stats(services: Authorized, bucket: Bucket = 3600, window: Window = 86_400) -> Response:
    now = datetime.now(UTC).timestamp()
    first = _first_bucket(bucket, window, now)
    counts: dict[int, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    types: set[str] = set()
    async for job in _paused(services, services.registry.created_since(orthanc_timestamp(first))):
        created = parse_orthanc_time(job.order_key[0])
        if created is None:
            continue
        start = int(created.timestamp() // bucket) * bucket
        counts[start][job.state][job.type] += 1
        types.add(job.type)
    periods = [
        {"Time": _iso(start), "States": {state: dict(by_type) for state, by_type in counts[start].items()}}
        for start in range(first, int(now) + 1, bucket)
    ]
    return OrjsonResponse({"Bucket": bucket, "Window": window, "Types": sorted(types), "Periods": periods})


def _percentiles(values: list[float]) -> dict[str, float]:
    values.sort()
    answer = {
        f"P{p}": values[min(len(values) - 1, math.ceil(p / 100 * len(values)) - 1)] for p in PERCENTILES
    }
    return {**answer, "Max": values[-1]}


def _times(job: Job) -> tuple[float, float] | None:
    """(waiting, running) seconds of a finished job from its owner's JSON: running is its EffectiveRuntime,
    waiting the time to its first slot as measured when it was first seen started; for a job not seen so
    (finished before this process started), the rest of the time from its creation to its end."""
    runtime = job.running_time
    if runtime is None:
        return None
    content = job.content
    created = parse_orthanc_time(str(content.get("CreationTime", "")))
    ended = parse_orthanc_time(str(content.get("CompletionTime", "")))
    if created is None or ended is None:
        return None
    if job.waited is not None:
        return job.waited, runtime
    return max(0.0, (ended - created).total_seconds() - runtime), runtime


@router.get("/stats/durations", summary="Waiting and running time percentiles of the jobs ended, per type")
async def duration_stats(services: Authorized, window: Window = 86_400) -> Response:
    since = datetime.now(UTC).timestamp() - window
    waits: dict[str, list[float]] = defaultdict(list)
    runs: dict[str, list[float]] = defaultdict(list)
    async for job in _paused(services, services.registry.finished_since(since)):
        times = _times(job)
        if times is not None:
            waits[job.type].append(times[0])
            runs[job.type].append(times[1])
    types: dict[str, Any] = {
        job_type: {
            "Count": len(runs[job_type]),
            "Wait": _percentiles(waits[job_type]),
            "Run": _percentiles(runs[job_type]),
        }
        for job_type in sorted(runs)
    }
    return OrjsonResponse({"Window": window, "Types": types})

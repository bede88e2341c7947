"""The job-service's own routes, under its prefix: servers, webhooks, event stream, statistics, dashboard;
and the orchestrator's routes at the root: health, readiness, metrics."""

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from orthanc_jobs import SERVICE_PREFIX, __version__
from orthanc_jobs.api.context import Authorized, Services, services_of
from orthanc_jobs.api.responses import OrjsonResponse
from orthanc_jobs.core.background import SharedRuns
from orthanc_jobs.core.errors import UnknownFile
from orthanc_jobs.core.eventlog import Event
from orthanc_jobs.core.wire import server_entry

router = APIRouter(prefix=SERVICE_PREFIX, tags=["Job-service"])
health_router = APIRouter(tags=["Health"])

KEEPALIVE_SECONDS = 15.0
# How long a stream resuming from an event this replica has not read yet waits for it (replicas).
RESUME_WAIT = 2.0
# How long /readyz waits for the Orthanc servers, and how many of them it asks at most.
READY_TIMEOUT = 1.0
READY_SAMPLE = 8
# Starting, a server resynchronised within this long counts as reached.
READY_RECENT = 5.0
_UI = Path(__file__).parent.parent / "ui"
_UI_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "bulk.js": "text/javascript; charset=utf-8",
    "chart.js": "text/javascript; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "detail.js": "text/javascript; charset=utf-8",
    "dom.js": "text/javascript; charset=utf-8",
    "filters.js": "text/javascript; charset=utf-8",
    "jobs.js": "text/javascript; charset=utf-8",
    "live.js": "text/javascript; charset=utf-8",
    "servers.js": "text/javascript; charset=utf-8",
    "state.js": "text/javascript; charset=utf-8",
    "webhooks.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}


@router.get("/servers", summary="The Orthanc servers of the cluster, their status and job counts")
async def list_servers(services: Authorized) -> Response:
    registry = services.registry
    return OrjsonResponse([server_entry(registry, server) for server in registry.servers()])


@router.get("/webhooks", summary="The webhooks that receive alerts, and how their deliveries go")
async def list_webhooks(services: Authorized) -> Response:
    return OrjsonResponse(services.webhooks.status())


@router.get("/", summary="What this service is")
async def about(services: Authorized) -> Response:
    return OrjsonResponse(
        {
            "Service": "orthanc-jobs",
            "Version": __version__,
            "Jobs": len(services.registry),
            # The history file was damaged at start: moved there, the service started without it.
            "HistoryMovedAside": services.history_moved_aside,
        }
    )


@router.get("/openapi.json", summary="The OpenAPI description of this service")
async def openapi(request: Request, services: Authorized) -> Response:
    return OrjsonResponse(request.app.openapi())


@router.get(
    "/events",
    summary="Server-Sent Events: every job change (job, removed) and server change (server)",
    response_class=StreamingResponse,
)
async def event_stream(
    request: Request,
    services: Authorized,
    last_event_id: Annotated[int | None, Header(ge=0)] = None,
    since: Annotated[int | None, Query(ge=0, description="Same as the Last-Event-ID header")] = None,
) -> StreamingResponse:
    events = services.events
    resume_from = last_event_id if last_event_id is not None else since
    if resume_from is not None and resume_from > events.last_id and services.replication is not None:
        # Seen through a replica ahead of this one by a few milliseconds: read the log that far first.
        await services.replication.reached(resume_from, RESUME_WAIT)
    queue = events.subscribe()  # before reading the backlog, so that nothing falls in between
    backlog = events.since(resume_from) if resume_from is not None else []
    authorization = request.headers.get("authorization")

    async def stream() -> AsyncIterator[bytes]:
        # Checked again while the stream lasts: it ends when the servers refuse the credentials.
        credentials = services.authenticator.watch(authorization, on_refusal=lambda: events.end(queue))
        try:
            last_sent = events.last_id if resume_from is None else resume_from
            if backlog is None:
                yield b"event: reset\ndata: {}\n\n"
                last_sent = events.last_id
            for missed in backlog or []:
                last_sent = missed.id
                yield missed.encode()
            yield b": connected\n\n"
            while True:
                try:
                    event: Event | None = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                if event is None:  # this client fell too far behind, or the service stops
                    return
                if event.id > last_sent:
                    last_sent = event.id
                    yield event.encode()
        finally:
            credentials.stop()
            events.unsubscribe(queue)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


@router.get("/ui", include_in_schema=False)
async def dashboard_root(services: Authorized) -> Response:
    return RedirectResponse(f"{SERVICE_PREFIX}/ui/", status_code=308)


@router.get("/ui/", summary="The dashboard")
@router.get("/ui/{name}", include_in_schema=False)
async def dashboard(services: Authorized, name: str = "index.html") -> Response:
    media_type = _UI_FILES.get(name)
    if media_type is None:
        raise UnknownFile(f"no file {name!r} in the dashboard")
    return Response((_UI / name).read_bytes(), media_type=media_type, headers={"Cache-Control": "no-cache"})


@health_router.get("/healthz", summary="Liveness, without credentials and without job data")
async def healthz(request: Request) -> Response:
    services = services_of(request)
    # Which replica answers, and whether it leads (a single service always does).
    return OrjsonResponse(
        {"Status": "ok", "Replica": services.settings.replica, "Leader": services.is_leader()}
    )


@health_router.get("/readyz", summary="Ready when the service can answer: it runs and reaches an Orthanc")
async def readyz(request: Request) -> Response:
    """200 only if a public request could be answered now: the registry is loaded and at least one live
    Orthanc server answers the service within a second (the credentials of every public request are
    checked against one). Probes at once share one round of questions."""
    if not getattr(request.app.state, "ready", False):
        return OrjsonResponse({"Status": "starting"}, status_code=503)
    services = services_of(request)
    if services.housekeeper.writing_fails:
        # Reads still answer from memory; plugin events are refused (503) until the history is written.
        return OrjsonResponse({"Status": "the job history cannot be written"}, status_code=503)
    if services.replication is not None and not services.replication.connected:
        # Reads answer from memory, without what the other replicas received since.
        return OrjsonResponse({"Status": "the other replicas' changes cannot be read"}, status_code=503)
    status, body = await _probes.run(id(services), lambda: _readiness(services))
    return OrjsonResponse(body, status_code=status)


# Probes that come together share one round of questions to the servers (per application).
_probes: SharedRuns[tuple[int, dict[str, Any]]] = SharedRuns()


async def _readiness(services: Services) -> tuple[int, dict[str, Any]]:
    live = services.registry.live_servers()
    if not live:
        return 503, {"Status": "no live Orthanc server", "Servers": 0}
    # Starting, a server whose jobs were listed a moment ago answered the service: no need to ask (hundreds
    # of servers registering at once after a restart keep the service too busy to answer a probe within a
    # second). Once ready, every probe asks: a frozen server's last answer says nothing of now.
    recent = [] if services.was_ready else services.registry.resynchronised_within(READY_RECENT)
    if recent:
        services.was_ready = True
        return 200, {"Status": "ready", "Servers": len(live), "Asked": 0, "Reachable": len(recent)}
    # Some of them, not all: one answering is enough, and a probe must not cost a request to each of
    # hundreds of servers (bench/scale.py).
    asked = random.sample(live, min(READY_SAMPLE, len(live)))
    answers = await asyncio.gather(
        *(services.client.check_reachable(server, READY_TIMEOUT) for server in asked), return_exceptions=True
    )
    reachable = sum(1 for answer in answers if answer is None)
    if not reachable:
        silent = ", ".join(server.name for server in asked)
        return 503, {
            "Status": "no Orthanc server answers the service",
            "Servers": len(live),
            "Asked": len(asked),
            "Reason": f"no answer within {READY_TIMEOUT:g} s from {silent}",
        }
    services.was_ready = True
    return 200, {"Status": "ready", "Servers": len(live), "Asked": len(asked), "Reachable": reachable}


@health_router.get("/metrics", summary="Prometheus metrics (no job data)")
async def metrics(request: Request) -> Response:
    return Response(generate_latest(services_of(request).metrics.collectors), media_type=CONTENT_TYPE_LATEST)

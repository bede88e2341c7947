"""The reporter plugin's API: registration, heartbeats and job events. Needs the shared secret."""

import time
from typing import Annotated, Any, Literal, TypeVar

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orthanc_jobs import INTERNAL_PREFIX
from orthanc_jobs.api.context import Services, require_plugin_secret
from orthanc_jobs.api.responses import describe_problems, raw_json
from orthanc_jobs.errors import BadRequest, Forbidden, UnknownJob
from orthanc_jobs.model import JobState, Server, is_job_id

router = APIRouter(prefix=INTERNAL_PREFIX, tags=["Reporter plugin (internal)"])

Plugin = Annotated[Services, Depends(require_plugin_secret)]

_INCARNATION = r"^[A-Za-z0-9._-]{1,128}$"
_OK = orjson.dumps({"Status": "ok"})

Model = TypeVar("Model", bound=BaseModel)


class Registration(BaseModel):
    model_config = ConfigDict(extra="ignore")

    Name: str = Field(min_length=1, max_length=256)
    Url: str = Field(pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$", max_length=1024)
    Incarnation: str = Field(pattern=_INCARNATION)
    Token: str = Field(min_length=1, max_length=1024)
    OrthancVersion: str = Field(default="", max_length=64)
    PluginVersion: str = Field(default="", max_length=64)


class Heartbeat(BaseModel):
    Incarnation: str = Field(pattern=_INCARNATION)
    #: Orthanc's REST API may not answer yet when the plugin registers: the version can come later.
    OrthancVersion: str = Field(default="", max_length=64)


class Event(BaseModel):
    Type: Literal["JOB_SUBMITTED", "JOB_SUCCESS", "JOB_FAILURE", "ORTHANC_STOPPED"]
    JobId: str | None = Field(default=None, max_length=64)
    Job: dict[str, Any] | None = None
    #: When Orthanc emitted it (the plugin's clock, seconds since the epoch), for the lag metric.
    Time: float | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "Event":
        if self.Type == "ORTHANC_STOPPED":
            return self
        if self.JobId is None or not is_job_id(self.JobId):
            raise ValueError(f"{self.Type} needs a valid JobId")
        if self.Job is not None and self.Job.get("ID") != self.JobId:
            raise ValueError("JobId does not match the job's ID")
        return self


class EventBatch(BaseModel):
    Incarnation: str = Field(pattern=_INCARNATION)
    Events: list[Event] = Field(max_length=10_000)


async def _parse(request: Request, model: type[Model]) -> Model:
    try:
        return model.model_validate(orjson.loads(await request.body()))
    except orjson.JSONDecodeError as error:
        raise BadRequest(f"the body is not JSON: {error}") from None
    except ValidationError as error:
        raise BadRequest(f"invalid {model.__name__}: {describe_problems(error.errors())}") from None


def _known_server(services: Services, incarnation: str) -> Server:
    server = services.registry.server_by_incarnation(incarnation)
    if server is None:
        raise UnknownJob(f"unknown incarnation {incarnation}: register first")
    return server


@router.post("/register", summary="A server (re)starts: it is resynchronised at once")
async def register(request: Request, services: Plugin) -> Response:
    registration = await _parse(request, Registration)
    url = registration.Url.rstrip("/")
    allowed = [
        prefix.strip() for prefix in services.settings.allowed_server_urls.split(",") if prefix.strip()
    ]
    if allowed and not any(url.startswith(prefix) for prefix in allowed):
        raise Forbidden(f"{url} is not among the allowed server URLs (ORTHANC_JOBS_ALLOWED_SERVER_URLS)")
    server = services.registry.register_server(
        name=registration.Name,
        url=url,
        incarnation=registration.Incarnation,
        token=registration.Token,
        orthanc_version=registration.OrthancVersion,
    )
    services.poller.schedule_resync(server)
    return raw_json(_OK)


@router.post("/heartbeat", summary="A server is alive; 404 asks it to register again")
async def heartbeat(request: Request, services: Plugin) -> Response:
    beat = await _parse(request, Heartbeat)
    server = _known_server(services, beat.Incarnation)
    if beat.OrthancVersion:
        server.orthanc_version = beat.OrthancVersion
    services.registry.mark_seen(server)
    return raw_json(_OK)


_TERMINAL_EVENTS = {"JOB_SUCCESS": JobState.SUCCESS, "JOB_FAILURE": JobState.FAILURE}


@router.post("/events", summary="Job events of one server, in the order Orthanc emitted them")
async def events(request: Request, services: Plugin) -> Response:
    batch = await _parse(request, EventBatch)
    server = _known_server(services, batch.Incarnation)
    registry = services.registry
    registry.mark_seen(server)
    metrics = services.metrics
    for event in batch.Events:
        metrics.events_received.labels(event.Type).inc()
        if event.Type == "ORTHANC_STOPPED":
            registry.mark_server_stopped(server)
        elif event.Job is not None:
            registry.apply_snapshot(server, event.Job)
        elif event.Type in _TERMINAL_EVENTS and event.JobId is not None:
            registry.apply_terminal_event(server, event.JobId, _TERMINAL_EVENTS[event.Type])
    # Lag to visibility: measured once the whole batch is applied, which is when the API answers it.
    now = time.time()
    for event in batch.Events:
        if event.Time is not None and 0 <= now - event.Time < 3600:
            metrics.event_lag.observe(now - event.Time)
    return raw_json(orjson.dumps({"Accepted": len(batch.Events)}))

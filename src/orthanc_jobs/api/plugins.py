"""The reporter plugin's API: registration, heartbeats and job events. Needs the server's own secret."""

import logging
import time
from typing import Annotated, Any, Literal, TypeVar, get_args

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orthanc_jobs import INTERNAL_PREFIX
from orthanc_jobs.api.context import PluginCaller, Services, require_plugin_secret
from orthanc_jobs.api.responses import describe_problems, raw_json
from orthanc_jobs.core.errors import BadRequest, Forbidden, ServerUnavailable, UnknownIncarnation
from orthanc_jobs.core.model import JobState, Server, is_job_id, normalize_server_url

router = APIRouter(prefix=INTERNAL_PREFIX, tags=["Reporter plugin (internal)"])

Plugin = Annotated[PluginCaller, Depends(require_plugin_secret)]

log = logging.getLogger(__name__)

_INCARNATION = r"^[A-Za-z0-9._-]{1,128}$"
_OK = orjson.dumps({"Status": "ok"})

Model = TypeVar("Model", bound=BaseModel)


class Registration(BaseModel):
    model_config = ConfigDict(extra="ignore")

    Name: str = Field(min_length=1, max_length=256)
    Url: str = Field(max_length=1024)  # checked by normalize_server_url
    Incarnation: str = Field(pattern=_INCARNATION)
    Token: str = Field(min_length=1, max_length=1024)
    OrthancVersion: str = Field(default="", max_length=64)
    PluginVersion: str = Field(default="", max_length=64)


class PluginGap(BaseModel):
    """What a plugin let go while the job-service was unreachable (its queue's bounds)."""

    DroppedEvents: int = Field(ge=0)
    DroppedJobJson: int = Field(ge=0)
    #: When the first and the last were let go (the plugin's clock, seconds since the epoch).
    First: float
    Last: float


class Heartbeat(BaseModel):
    Incarnation: str = Field(pattern=_INCARNATION)
    #: Orthanc's REST API may not answer yet when the plugin registers: the version can come later.
    OrthancVersion: str = Field(default="", max_length=64)
    Gap: PluginGap | None = None


EventType = Literal["JOB_SUBMITTED", "JOB_SUCCESS", "JOB_FAILURE", "ORTHANC_STOPPED"]
_EVENT_TYPES = get_args(EventType)


class Event(BaseModel):
    Type: EventType
    JobId: str | None = Field(default=None, max_length=64)
    #: When Orthanc emitted it (the plugin's clock, seconds since the epoch), for the lag metric.
    Time: float | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "Event":
        if self.Type != "ORTHANC_STOPPED" and (self.JobId is None or not is_job_id(self.JobId)):
            raise ValueError(f"{self.Type} needs a valid JobId")
        return self


class EventBatch(BaseModel):
    Incarnation: str = Field(pattern=_INCARNATION)
    #: Judged one by one (``_apply``): one event the service cannot use must not hold back the others.
    Events: list[Any] = Field(max_length=10_000)


async def _parse(request: Request, model: type[Model]) -> Model:
    return _parse_body(await request.body(), model)


def _parse_body(body: bytes, model: type[Model]) -> Model:
    try:
        return model.model_validate(orjson.loads(body))
    except orjson.JSONDecodeError as error:
        raise BadRequest(f"the body is not JSON: {error}") from None
    except ValidationError as error:
        raise BadRequest(f"invalid {model.__name__}: {describe_problems(error.errors())}") from None


def _speaking_for(services: Services, url: str, incarnation: str) -> Server:
    """The server a request speaks for: its incarnation known (404: register again), and registered at the
    URL whose secret the request carries (403)."""
    server = services.registry.server_by_incarnation(incarnation)
    if server is None:
        raise UnknownIncarnation(f"unknown incarnation {incarnation}: register first")
    if server.url != url:
        raise Forbidden(f"incarnation {incarnation} is not the server at {url}")
    return server


@router.post("/register", summary="A server (re)starts: it is resynchronised at once")
async def register(request: Request, caller: Plugin) -> Response:
    services, url = caller.services, caller.server_url
    registration = await _parse(request, Registration)
    try:
        registered = normalize_server_url(registration.Url)
    except ValueError as error:
        raise BadRequest(str(error)) from None
    if registered != url:
        raise Forbidden(f"a plugin with the secret of {url} registers {registered}")
    allowed = services.settings.allowed_servers
    if allowed is not None and url not in allowed:
        raise Forbidden(f"{url} is not a declared server (ORTHANC_JOBS_ALLOWED_SERVER_URLS)")
    server = services.registry.register_server(
        name=registration.Name,
        url=url,
        incarnation=registration.Incarnation,
        token=registration.Token,
        orthanc_version=registration.OrthancVersion,
    )
    services.poller.schedule_resync(server)
    # The plugin sizes its batches by what this service accepts in one request.
    return raw_json(orjson.dumps({"Status": "ok", "MaxBodyBytes": services.settings.max_body_bytes}))


@router.post("/heartbeat", summary="A server is alive; 404 asks it to register again")
async def heartbeat(request: Request, caller: Plugin) -> Response:
    return await take_heartbeat(caller.services, caller.server_url, request)


async def take_heartbeat(services: Services, server_url: str, request: Request) -> Response:
    """The heartbeat of the server at ``server_url`` (its secret checked). Every server sends one every
    few seconds: the application answers it before the framework's layers too (api/fast.py)."""
    return raw_json(heartbeat_answer(services, server_url, await request.body()))


def heartbeat_answer(services: Services, server_url: str, body: bytes) -> bytes:
    """``take_heartbeat`` once its body is in: the body of its answer."""
    beat = _parse_body(body, Heartbeat)
    server = _speaking_for(services, server_url, beat.Incarnation)
    if beat.OrthancVersion:
        server.orthanc_version = beat.OrthancVersion
    if beat.Gap is not None:
        services.registry.report_gap(server, beat.Gap.model_dump())
    services.registry.mark_seen(server)
    if services.housekeeper.writing_fails or (
        services.replication is not None and not services.replication.connected
    ):
        # Seen here, but the other replicas would not hear of it (and the leader would find the server
        # silent): the plugin sends its heartbeats to another replica, one that can tell them.
        raise ServerUnavailable("this replica cannot share heartbeats now (PostgreSQL out of its reach)")
    return _OK


_TERMINAL_EVENTS = {"JOB_SUCCESS": JobState.SUCCESS, "JOB_FAILURE": JobState.FAILURE}


def _job_problem(job: Any, job_id: str | None) -> str | None:
    """Why a job's JSON cannot be used (None: it can)."""
    if not isinstance(job, dict):
        return "Job is not a JSON object"
    if job.get("ID") != job_id:
        return "JobId does not match the job's ID"
    if job.get("State") not in JobState.__members__.values():
        return f"the job's State is not one of {', '.join(JobState)}"
    return None


def _apply(services: Services, server: Server, raw: Any) -> str | None:
    """Apply one event; returns why it, or its job JSON, could not be used (None: all of it was)."""
    registry = services.registry
    try:
        event = Event.model_validate(raw)
    except ValidationError as error:
        return describe_problems(error.errors())
    if event.Type == "ORTHANC_STOPPED":
        registry.mark_server_stopped(server)
        return None
    assert event.JobId is not None
    job = raw.get("Job")
    problem = None
    if job is not None:
        problem = _job_problem(job, event.JobId)
        if problem is not None:
            return problem  # an event that contradicts itself is not used at all
        try:
            registry.apply_snapshot(server, job)
            return None
        except (orjson.JSONEncodeError, TypeError, ValueError, RecursionError) as error:
            problem = f"the job's JSON cannot be stored ({error}); the event was used without it"
    # Without usable JSON, the event itself still tells how the job ended, or that it exists.
    if event.Type in _TERMINAL_EVENTS:
        registry.apply_terminal_event(server, event.JobId, _TERMINAL_EVENTS[event.Type], event.Time)
    elif registry.get_job(event.JobId) is None:
        services.poller.schedule_read(server, event.JobId)
    return problem


@router.post("/events", summary="Job events of one server, in the order Orthanc emitted them")
async def events(request: Request, caller: Plugin) -> Response:
    """Each event is judged on its own: those the service cannot use (or whose job JSON it cannot use) are
    answered in ``Refused`` with a reason, and the others are applied. The answer comes once the changes are
    written to the store, so that an event answered 200 survives a crash of the job-service."""
    services = caller.services
    batch = await _parse(request, EventBatch)
    server = _speaking_for(services, caller.server_url, batch.Incarnation)
    registry = services.registry
    registry.mark_seen(server)
    metrics = services.metrics
    refused = []
    for index, raw in enumerate(batch.Events):
        try:
            problem = _apply(services, server, raw)
        except Exception:  # a defect of ours must not hold back the plugin's later events
            log.exception("event %d from %s could not be applied: %.500r", index, server.name, raw)
            problem = "the job-service could not apply it (see its log)"
        fields = raw if isinstance(raw, dict) else {}
        event_type = fields.get("Type")
        metrics.events_received.labels(event_type if event_type in _EVENT_TYPES else "invalid").inc()
        if problem is not None:
            job_id = fields.get("JobId")
            refused.append(
                {"Index": index, "JobId": job_id if isinstance(job_id, str) else None, "Reason": problem}
            )
    if refused:
        log.warning("%s: %d event(s) refused, e.g. %s", server.name, len(refused), refused[0])
    try:
        await services.housekeeper.flush()
    except Exception as error:
        # The plugin keeps the events and sends them again (503: unavailable, never given up on); the
        # housekeeper logs the failure.
        raise ServerUnavailable(f"the job history cannot be written: {error}") from error
    # Lag to visibility: measured once the whole batch is applied, which is when the API answers it.
    now = time.time()
    for raw in batch.Events:
        sent = raw.get("Time") if isinstance(raw, dict) else None
        if isinstance(sent, int | float) and 0 <= now - sent < 3600:
            metrics.event_lag.observe(now - sent)
    accepted = len(batch.Events) - len(refused)
    return raw_json(orjson.dumps({"Accepted": accepted, "Refused": refused}))

"""``/orthanc-jobs/actions``: one action on every job a filter matches (core/bulk.py).

``POST`` with ``{"Action": "resubmit", "Filter": {"status": "Failure", "type": "DicomModalityStore"},
"DryRun": true}`` answers how many jobs match and which their state refuses; without ``DryRun`` it starts
the run (202) and answers where to follow it. ``Expected`` (the count a dry run gave) makes the run refuse
to start (409) if the jobs matching changed meanwhile: what a person confirmed is what is done.
"""

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from orthanc_jobs import SERVICE_PREFIX
from orthanc_jobs.api.context import Authorized, AuthorizedChange, Services
from orthanc_jobs.api.filters import job_query_from_json, page_of
from orthanc_jobs.api.responses import OrjsonResponse
from orthanc_jobs.core.bulk import BULK_ACTIONS, DELETE, plan
from orthanc_jobs.core.errors import BadRequest, Conflict, ServerUnavailable, UnknownFile
from orthanc_jobs.core.model import Job, Server
from orthanc_jobs.core.orthanc import job_path

router = APIRouter(prefix=SERVICE_PREFIX, tags=["Job-service"])

_FIELDS = {"Action", "Filter", "DryRun", "Expected"}


def _message(body: bytes, status: int) -> str:
    """What an owner's error answer says (Orthanc's Message and Details), or its status."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        answer = None
    if isinstance(answer, dict) and answer.get("Message"):
        details = answer.get("Details")
        return f"{answer['Message']}: {details}" if details else str(answer["Message"])
    return f"the Orthanc server answered {status}"


async def _request_body(request: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as error:
        raise BadRequest(f"the body is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise BadRequest('the body is a JSON object: {"Action": ..., "Filter": {...}, "DryRun": true}')
    unknown = set(body) - _FIELDS
    if unknown:
        raise BadRequest(
            f"unknown field(s) {', '.join(sorted(unknown))}; fields are {', '.join(sorted(_FIELDS))}"
        )
    return body


@router.post("/actions", summary="cancel, pause, resume, resubmit or delete every job a filter matches")
async def start_action(request: Request, services: AuthorizedChange) -> Response:
    body = await _request_body(request)
    action = body.get("Action")
    if action not in BULK_ACTIONS:
        raise BadRequest(f"Action: one of {', '.join(BULK_ACTIONS)} (got {action!r})")
    criteria = body.get("Filter")
    if not isinstance(criteria, dict) or not criteria:
        raise BadRequest('Filter: the listing\'s filters, at least one, e.g. {"status": "Failure"}')
    dry_run = body.get("DryRun", False)
    expected = body.get("Expected")
    if not isinstance(dry_run, bool) or (
        expected is not None and (type(expected) is not int or expected < 0)
    ):
        raise BadRequest("DryRun is true or false, Expected a count of jobs")
    registry = services.registry
    query = job_query_from_json(registry, criteria)
    _, matching = await page_of(registry, query, 0, None)
    planned = plan(registry, action, matching)
    summary = planned.summary()
    if dry_run:
        return OrjsonResponse({**summary, "DryRun": True})
    if expected is not None and expected != len(planned.accepted):
        raise Conflict(
            f"{len(planned.accepted)} jobs would be acted on now, not the {expected} expected: the jobs "
            "matching changed since (run the dry run again)"
        )
    if services.bulk_actions.running() >= services.bulk_actions.max_running:
        raise ServerUnavailable(
            f"{services.bulk_actions.max_running} actions on many jobs run already: wait for one to end"
        )
    authorization = request.headers.get("authorization")

    async def perform(owner: Server, job: Job) -> tuple[int, str]:
        method, path = (
            ("DELETE", job_path(job.id)) if action == DELETE else ("POST", job_path(job.id, action))
        )
        answer = await services.client.send(owner, method, path, authorization, b"")
        if action == DELETE and answer.status_code < 400:
            registry.remove_job(job.id)
        return answer.status_code, _message(
            answer.content, answer.status_code
        ) if answer.status_code >= 400 else ""

    async def read_back(owner: Server, job_id: str) -> None:
        if action != DELETE:
            await services.poller.refresh_job(owner, job_id)

    run = services.bulk_actions.start(planned, perform, read_back)
    path = f"{SERVICE_PREFIX}/actions/{run.id}"
    return OrjsonResponse(
        {**summary, "ID": run.id, "Path": path}, status_code=202, headers={"Location": path}
    )


@router.get("/actions", summary="The actions on many jobs run by this replica, newest first")
async def list_actions(services: Authorized) -> Response:
    return OrjsonResponse([run.summary(with_results=False) for run in services.bulk_actions.recent()])


def _run_of(services: Services, action_id: str) -> Any:
    run = services.bulk_actions.get(action_id)
    if run is None:
        # Kept by the replica that runs it (the event stream shows it on every replica), the last 20 only.
        raise UnknownFile(f"no action {action_id!r} here (this replica keeps the last ones it ran)")
    return run


@router.get("/actions/{action_id}", summary="How far an action went, with a result per job")
async def get_action(action_id: str, services: Authorized) -> Response:
    return OrjsonResponse(_run_of(services, action_id).summary())


@router.post("/actions/{action_id}/cancel", summary="Stop sending an action to more jobs")
async def cancel_action(action_id: str, services: AuthorizedChange) -> Response:
    run = _run_of(services, action_id)
    services.bulk_actions.cancel(run)
    return OrjsonResponse(run.summary(with_results=False))

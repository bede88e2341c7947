"""The Orthanc-compatible jobs routes (``/jobs``...), answered for the whole services.

Same JSON shapes and status codes as one Orthanc; extensions (filters, paging, the ``Server`` field of
expanded jobs) are additions a plain Orthanc client never sees unless it asks.
"""

from typing import Annotated

import httpx
import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from orthanc_jobs.api.context import Authorized, AuthorizedChange, Services
from orthanc_jobs.api.filters import ListingQuery, PageLimit, PageOffset, page_of
from orthanc_jobs.api.responses import MAX_ERROR_BODY, OUTPUT_HEADERS, error_from_owner, raw_json
from orthanc_jobs.core.errors import BadRequest, Conflict, MethodNotAllowed, ServerUnavailable, UnknownJob
from orthanc_jobs.core.lookups import Unreadable
from orthanc_jobs.core.model import (
    Job,
    JobAction,
    Server,
    is_job_id,
    is_output_key,
    normalize_server_url,
)
from orthanc_jobs.core.orthanc import OrthancError, job_path
from orthanc_jobs.core.wire import expanded_jobs, job_json, server_field

# Set by nginx on the requests it sends here (cluster/config.py, deploy/nginx.conf): where it reaches each
# server by itself. An output is then answered with ACCEL_REDIRECT to that place, and nginx streams it
# from the owner (with the caller's own request, credentials included) as fast as from the owner directly.
OWNERS_HEADER = "x-orthanc-jobs-owners"
ACCEL_REDIRECT = "X-Accel-Redirect"

router = APIRouter(tags=["Orthanc-compatible jobs API"])


def _expand_requested(request: Request) -> bool:
    value = request.query_params.get("expand")
    return value is not None and value.lower() not in ("false", "0", "no")


@router.get("/jobs", summary="List the cluster's jobs (ids, or objects with ?expand)")
@router.get("/jobs/", include_in_schema=False)  # Orthanc ignores a trailing slash
async def list_jobs(
    request: Request,
    services: Authorized,
    query: ListingQuery,
    expand: Annotated[str | None, Query(description="Present (and not 'false'): full job objects")] = None,
    limit: PageLimit = None,
    offset: PageOffset = 0,
) -> Response:
    registry = services.registry
    total, page = await page_of(registry, query, offset, limit)
    headers = {"X-Total-Count": str(total)}
    if _expand_requested(request):
        return raw_json(expanded_jobs(registry, page), headers=headers)
    return raw_json(orjson.dumps([job.id for job in page]), headers=headers)


async def find_job(services: Services, job_id: str) -> Job | Unreadable:
    """The job, from the registry or, for an id not known yet, from whichever live server has it."""
    if not is_job_id(job_id):
        raise UnknownJob(f"{job_id!r} is not a job id")
    job = services.registry.get_job(job_id) or await services.lookups.find(job_id)
    if job is None:
        raise UnknownJob(f"unknown job {job_id}")
    return job


def owner_of(services: Services, job: Job | Unreadable) -> Server:
    if isinstance(job, Unreadable):
        return job.owner
    owner = services.registry.owner(job)
    if owner is None:
        raise Conflict(f"job {job.id} belonged to an Orthanc process that is gone ({job.server_url})")
    return owner


def checked_output_key(key: str) -> str:
    if not is_output_key(key):
        raise BadRequest(f"{key!r} is not an output key")
    return key


async def _send_to_owner(
    request: Request, services: Services, owner: Server, method: str, path: str, stream: bool = False
) -> httpx.Response:
    """The caller's request, with the caller's credentials, to the job's owner."""
    body = await request.body() if method == "POST" else b""
    try:
        return await services.client.send(
            owner, method, path, request.headers.get("authorization"), body, stream=stream
        )
    except OrthancError as error:
        raise ServerUnavailable(f"Orthanc server {owner.name} did not answer") from error


async def _forward(request: Request, services: Services, owner: Server, method: str, path: str) -> Response:
    answer = await _send_to_owner(request, services, owner, method, path)
    if answer.status_code >= 400:
        return error_from_owner(request, answer, answer.content[:MAX_ERROR_BODY])
    return Response(
        answer.content, answer.status_code, media_type=answer.headers.get("content-type", "application/json")
    )


@router.get("/jobs/{job_id}", summary="One job, from whichever server owns it")
async def get_job(request: Request, job_id: str, services: Authorized) -> Response:
    job = await find_job(services, job_id)
    if isinstance(job, Unreadable):
        # Its owner cannot write it as JSON: the caller gets the owner's own answer, as from one Orthanc.
        return await _forward(request, services, job.owner, "GET", job_path(job.job_id))
    return raw_json(job_json(job, server_field(services.registry, job)))


@router.post("/jobs/{job_id}/{action}", summary="cancel, pause, resume or resubmit, on the owner")
async def act_on_job(request: Request, job_id: str, action: str, services: AuthorizedChange) -> Response:
    try:
        known_action = JobAction(action)
    except ValueError:
        raise MethodNotAllowed(
            f"POST /jobs/{{id}}/{action} does not exist; actions are {', '.join(JobAction)}", "GET, DELETE"
        ) from None
    job = await find_job(services, job_id)
    owner = owner_of(services, job)
    answer = await _forward(request, services, owner, "POST", job_path(job_id, str(known_action)))
    if answer.status_code < 400:
        # Orthanc reports pause, resume and the cancel of a pending job by no event: read the job back.
        await services.poller.refresh_job(owner, job_id)
    return answer


@router.get("/jobs/{job_id}/{key}", summary="An output of a job (e.g. archive), streamed from its owner")
async def get_job_output(request: Request, job_id: str, key: str, services: Authorized) -> Response:
    checked_output_key(key)
    job = await find_job(services, job_id)
    owner = job.owner if isinstance(job, Unreadable) else services.registry.owner(job)
    if owner is None:
        raise UnknownJob(f"the output {key} of job {job_id} went with the Orthanc process that owned it")
    redirect = _accelerated(request, owner)
    if redirect is not None:
        # The load balancer fetches it from the owner itself: its bytes never pass through this process.
        return Response(headers={ACCEL_REDIRECT: redirect + job_path(job_id, key)[1:]})
    answer = await _send_to_owner(request, services, owner, "GET", job_path(job_id, key), stream=True)
    if answer.status_code != 200:
        try:
            body = await answer.aread()  # an error answer of Orthanc's: small
        finally:
            await answer.aclose()
        return error_from_owner(request, answer, body[:MAX_ERROR_BODY])
    headers = {name: answer.headers[name] for name in OUTPUT_HEADERS if name in answer.headers}
    return StreamingResponse(
        answer.aiter_raw(), status_code=200, headers=headers, background=BackgroundTask(answer.aclose)
    )


def _accelerated(request: Request, owner: Server) -> str | None:
    """Where nginx reaches the owner by itself, if it said so (``X-Orthanc-Jobs-Owners``: entries
    ``<server URL> <internal path>``, comma-separated, written by its configuration, never by a client,
    whose header of that name nginx replaces): the path of an internal location proxying to that URL."""
    announced = request.headers.get(OWNERS_HEADER)
    if not announced:
        return None
    for entry in announced.split(","):
        url, _, path = entry.strip().partition(" ")
        try:
            if normalize_server_url(url) == owner.url and path.startswith("/") and path.endswith("/"):
                return path
        except ValueError:
            continue
    return None


@router.delete("/jobs/{job_id}", summary="Delete a finished job on its owner (Orthanc >= 1.12.2)")
async def delete_job(request: Request, job_id: str, services: AuthorizedChange) -> Response:
    job = await find_job(services, job_id)
    answer = await _forward(request, services, owner_of(services, job), "DELETE", job_path(job_id))
    if answer.status_code < 400:
        services.registry.remove_job(job_id)
    return answer


@router.delete("/jobs/{job_id}/{key}", summary="Delete an output of a job (Orthanc >= 1.12.1)")
async def delete_job_output(request: Request, job_id: str, key: str, services: AuthorizedChange) -> Response:
    checked_output_key(key)
    job = await find_job(services, job_id)
    return await _forward(request, services, owner_of(services, job), "DELETE", job_path(job_id, key))

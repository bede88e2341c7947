"""``GET /jobs/{id}``, the route every client polls, answered without the framework's layers.

The route only checks the caller's credentials (cached), finds the job and copies its bytes, or answers
404 once the servers were asked: routing and dependency injection cost several times that. The answers
are the very ones of the route in api/jobs.py (same bytes, same headers); what this path does not
handle (a job its owner cannot write as JSON, any other route) goes on to the application.
"""

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from orthanc_jobs.api.context import Services
from orthanc_jobs.api.jobs import find_job
from orthanc_jobs.api.responses import error_response, raw_json
from orthanc_jobs.core.errors import OrthancJobsError
from orthanc_jobs.core.model import Job, is_job_id
from orthanc_jobs.core.wire import job_json, server_field

_PREFIX = "/jobs/"
_ID_LENGTH = 36


class JobReads:
    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if (
            len(path) != len(_PREFIX) + _ID_LENGTH
            or not path.startswith(_PREFIX)
            or scope["method"] != "GET"
            or not is_job_id(path[len(_PREFIX) :])
        ):
            await self.app(scope, receive, send)
            return
        services = self.services
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        job_id = path[len(_PREFIX) :]
        try:
            await services.authenticator.check(authorization)
            job = await find_job(services, job_id)
        except OrthancJobsError as error:
            await error_response(Request(scope), error)(scope, receive, send)
            return
        if isinstance(job, Job):
            await raw_json(job_json(job, server_field(services.registry, job)))(scope, receive, send)
        else:  # its owner cannot write it: the route asks the owner
            await self.app(scope, receive, send)

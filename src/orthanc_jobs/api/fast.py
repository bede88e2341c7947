"""The routes called most, answered before the framework's layers: ``GET /jobs/{id}``, which every client
polls, and the plugins' heartbeats (every server's, every few seconds).

The route only checks the caller's credentials (cached), finds the job and copies its bytes, or answers
404 once the servers were asked: the framework's middlewares, routing and dependency injection cost
several times that (bench/README.md). So the application answers it first (JobServiceApp), writing what
those layers would have added: the security headers (api/browsers.py), and the bound on requests in
progress (api/limits.py). The answers are the very ones of the route in api/jobs.py (same bytes, same
headers); what this path does not handle goes on to the application: a request with a body (the limits
judge it), one over the bound on requests in progress (refused there), and a job its owner cannot write
as JSON (the route asks the owner). Most job reads do not even reach the application: the HTTP protocol
answers them with ``JobReads.answer_at_once`` (api/http_server.py) when nothing needs to be awaited.
"""

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from orthanc_jobs import INTERNAL_PREFIX
from orthanc_jobs.api.auth import SERVER_HEADER
from orthanc_jobs.api.browsers import JSON_ANSWER_HEADERS
from orthanc_jobs.api.context import Services
from orthanc_jobs.api.jobs import find_job
from orthanc_jobs.api.limits import InProgress, bounded, declared_length_problem
from orthanc_jobs.api.plugins import heartbeat_answer, take_heartbeat
from orthanc_jobs.api.responses import error_response
from orthanc_jobs.core import wire
from orthanc_jobs.core.errors import OrthancJobsError
from orthanc_jobs.core.model import Job, is_job_id

_PREFIX = "/jobs/"
_PREFIX_BYTES = _PREFIX.encode()
HEARTBEAT_PATH = INTERNAL_PREFIX + "/heartbeat"
_HEARTBEAT_TARGET = HEARTBEAT_PATH.encode()
_SERVER_HEADER = SERVER_HEADER.encode()
_PATH_LENGTH = len(_PREFIX) + 36
_JSON = (b"content-type", b"application/json")
Headers = list[tuple[bytes, bytes]]
#: The headers and body of an answer written by the HTTP protocol at once.
Answer = tuple[Headers, bytes]


class JobReads:
    def __init__(self, services: Services, requests: InProgress) -> None:
        self.services = services
        self.requests = requests

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer the request if it is a job read this path handles; False: the application must."""
        if scope["type"] != "http":
            return False  # lifespan
        path = scope["path"]
        if (
            len(path) != _PATH_LENGTH
            or scope["method"] != "GET"
            or not path.startswith(_PREFIX)
            or not is_job_id(job_id := path[len(_PREFIX) :])
        ):
            return False
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif (name == b"content-length" and value != b"0") or name == b"transfer-encoding":
                return False
        requests = self.requests
        if requests.count >= requests.maximum:
            return False
        services = self.services
        requests.count += 1
        try:
            try:
                await services.authenticator.check(authorization)
                job = await find_job(services, job_id)
            except OrthancJobsError as error:
                await _send_error(scope, receive, send, error)
                return True
            if not isinstance(job, Job):
                return False
            body = wire.job_json(job, wire.server_field(services.registry, job))
            await _send_json(send, 200, body)
            return True
        finally:
            requests.count -= 1

    def answer_at_once(
        self, method: bytes, target: bytes, headers: Headers, body: bytes | None
    ) -> Answer | None:
        """The headers and body of the answer to a job read that needs nothing awaited (credentials
        accepted a moment ago, a job known, no body), for the HTTP protocol to write as soon as the
        request's headers are in (api/http_server.py); None: the request goes to the application."""
        if (
            body != b""
            or method != b"GET"
            or len(target) != _PATH_LENGTH
            or not target.startswith(_PREFIX_BYTES)
        ):
            return None
        job_id = target[len(_PREFIX) :].decode("latin-1")
        if not is_job_id(job_id):
            return None
        authorization = None
        for name, value in headers:
            if name == b"authorization":
                authorization = value.decode("latin-1")
        services = self.services
        if not services.authenticator.accepted_now(authorization):
            return None
        job = services.registry.get_job(job_id)
        if job is None:
            return None
        body = wire.job_json(job, wire.server_field(services.registry, job))
        return [(b"content-length", str(len(body)).encode()), _JSON, *JSON_ANSWER_HEADERS], body


class Heartbeats:
    """``POST /orthanc-jobs/internal/heartbeat``, as the route in api/plugins.py answers it (the same
    function), within the same bounds on its body (api/limits.py) and with the same headers."""

    def __init__(self, services: Services, max_bytes: int, body_timeout: float) -> None:
        self.services = services
        self.max_bytes = max_bytes
        self.body_timeout = body_timeout

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> bool:
        if scope["type"] != "http" or scope["path"] != HEARTBEAT_PATH or scope["method"] != "POST":
            return False
        request = Request(scope, bounded(receive, self.max_bytes, self.body_timeout))
        try:
            problem = declared_length_problem(scope, self.max_bytes)
            if problem is not None:
                raise problem
            server_url = self.services.plugin_secret.check(request)
            response = await take_heartbeat(self.services, server_url, request)
        except OrthancJobsError as error:
            await _send_error(scope, receive, send, error)
            return True
        response.raw_headers.extend(JSON_ANSWER_HEADERS)
        await response(scope, receive, send)
        return True

    def answer_at_once(
        self, method: bytes, target: bytes, headers: Headers, body: bytes | None
    ) -> Answer | None:
        """A heartbeat whose body is in and that is accepted, answered by the HTTP protocol at once (as
        ``JobReads.answer_at_once``); anything else (a refusal among them) goes to the application."""
        if method != b"POST" or target != _HEARTBEAT_TARGET or body is None or len(body) > self.max_bytes:
            return None
        authorization = server = None
        for name, value in headers:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == _SERVER_HEADER:
                server = value.decode("latin-1")
        services = self.services
        try:
            answer = heartbeat_answer(
                services, services.plugin_secret.check_headers(authorization, server), body
            )
        except OrthancJobsError:
            return None
        return [(b"content-length", str(len(answer)).encode()), _JSON, *JSON_ANSWER_HEADERS], answer


class JobServiceApp(FastAPI):
    """The job-service's application: the short paths first (JobReads, Heartbeats), then FastAPI."""

    job_reads: JobReads | None = None
    heartbeats: Heartbeats | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        for short in (self.job_reads, self.heartbeats):
            if short is not None and await short.answer(scope, receive, send):
                return
        await super().__call__(scope, receive, send)

    def answer_at_once(
        self, method: bytes, target: bytes, headers: Headers, body: bytes | None
    ) -> Answer | None:
        """For the HTTP protocol (api/http_server.py): the answer to a job read or a heartbeat that needs
        nothing awaited; None: the request goes through the application."""
        for short in (self.job_reads, self.heartbeats):
            if short is not None and (answer := short.answer_at_once(method, target, headers, body)):
                return answer
        return None


async def _send_json(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-length", str(len(body)).encode()), _JSON, *JSON_ANSWER_HEADERS]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_error(scope: Scope, receive: Receive, send: Send, error: OrthancJobsError) -> None:
    """As the application answers it (api/responses.error_response), with the security headers."""
    response = error_response(Request(scope), error)
    response.raw_headers.extend(JSON_ANSWER_HEADERS)
    await response(scope, receive, send)

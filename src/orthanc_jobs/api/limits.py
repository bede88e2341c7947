"""Bounds on what one request may cost: its body's size and how long it takes to arrive, and how many
public requests are in progress at once.

The plugins' routes (``/orthanc-jobs/internal/``) and the health routes have no share in the bound on
public requests: a flood of the public routes cannot keep a server's events out, nor a probe from seeing
the service alive.
"""

import asyncio

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orthanc_jobs import INTERNAL_PREFIX, SERVICE_PREFIX
from orthanc_jobs.api.modalities import STORE_STRAIGHT_PATH
from orthanc_jobs.api.responses import error_response
from orthanc_jobs.core.errors import (
    BadRequest,
    OrthancJobsError,
    PayloadTooLarge,
    RequestTimeout,
    ServerUnavailable,
)

# Not counted: probes, and the event streams, which last and have a bound of their own (events.py).
_UNBOUNDED_PATHS = ("/healthz", "/readyz", "/metrics", SERVICE_PREFIX + "/events")


class InProgress:
    """How many public requests are being answered, and the most allowed at once (shared by RequestLimits
    and the short path of job reads, api/fast.py)."""

    def __init__(self, maximum: int) -> None:
        self.count = 0
        self.maximum = maximum

    def busy(self) -> ServerUnavailable:
        return ServerUnavailable(f"{self.count} requests in progress (the most allowed): try again")


class RequestLimits:
    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        body_timeout: float,
        max_requests_in_progress: int = 0,
        requests: InProgress | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout = body_timeout
        self.requests = requests or InProgress(max_requests_in_progress)

    @property
    def in_progress(self) -> int:
        return self.requests.count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or STORE_STRAIGHT_PATH.fullmatch(scope["path"]):
            # A DICOM file sent on as it is is streamed to Orthanc: Orthanc bounds it, as through nginx.
            await self.app(scope, receive, send)
            return
        problem = declared_length_problem(scope, self.max_bytes)
        if problem is not None:
            await _refuse(scope, receive, send, problem)
            return
        path: str = scope["path"]
        counted = not (path.startswith(INTERNAL_PREFIX) or path in _UNBOUNDED_PATHS)
        requests = self.requests
        if counted and requests.count >= requests.maximum:
            await _refuse(scope, receive, send, requests.busy(), {"Retry-After": "1"})
            return
        if counted:
            requests.count += 1
        try:
            await self.app(scope, self._bounded(receive), send)
        finally:
            if counted:
                requests.count -= 1

    def _bounded(self, receive: Receive) -> Receive:
        return bounded(receive, self.max_bytes, self.body_timeout)


def declared_length_problem(scope: Scope, max_bytes: int) -> OrthancJobsError | None:
    """What is wrong with the request's Content-Length, if anything (the body is bounded as it comes)."""
    for name, value in scope["headers"]:
        if name != b"content-length":
            continue
        if not value.isdigit():
            return BadRequest(f"bad Content-Length {value[:40]!r}")
        if int(value) > max_bytes:
            return PayloadTooLarge(f"request body over {max_bytes} bytes")
    return None


def bounded(receive: Receive, max_bytes: int, body_timeout: float) -> Receive:
    """``receive``, refusing a body over the size limit or one that has not arrived by the deadline."""
    deadline = asyncio.get_running_loop().time() + body_timeout
    received = 0
    complete = False

    async def bounded_receive() -> Message:
        nonlocal received, complete
        if complete:  # past the body, only a disconnect is left to wait for: no deadline
            return await receive()
        try:
            async with asyncio.timeout_at(deadline):
                message = await receive()
        except TimeoutError:
            raise RequestTimeout(f"the request body did not arrive within {body_timeout:g} s") from None
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise PayloadTooLarge(f"request body over {max_bytes} bytes")
            complete = not message.get("more_body", False)
        return message

    return bounded_receive


async def _refuse(
    scope: Scope, receive: Receive, send: Send, error: OrthancJobsError, headers: dict[str, str] | None = None
) -> None:
    """Answer before the application sees the request, as it would answer the same error."""
    response = error_response(Request(scope), error)
    response.headers.update(headers or {})
    await response(scope, receive, send)

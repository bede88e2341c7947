"""JSON answers, written the way Orthanc writes its own (errors included)."""

from collections.abc import Sequence
from typing import Any

import httpx
import orjson
from fastapi import Request
from fastapi.responses import Response

from orthanc_jobs.core import wire
from orthanc_jobs.core.errors import MethodNotAllowed, OrthancJobsError, orthanc_error_for

# Headers of an owner's answer passed on to the caller (an archive, a query's answers).
OUTPUT_HEADERS = ("content-type", "content-length", "content-disposition")
# An error answer from an owner is read whole; this bounds it.
MAX_ERROR_BODY = 64 * 1024


class OrjsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def describe_problems(errors: Sequence[Any]) -> str:
    """Pydantic's validation errors, in one line."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in list(errors)[:5])


def raw_json(body: bytes, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status_code, media_type="application/json", headers=headers)


def error_body(
    request: Request, status_code: int, message: str, orthanc_error: str, orthanc_status: int
) -> bytes:
    return wire.error_body(
        request.method, request.url.path, status_code, message, orthanc_error, orthanc_status
    )


def status_error(
    request: Request, status_code: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    """An error answer for a bare HTTP status (an unknown route, an owner's empty answer)."""
    name, code = orthanc_error_for(status_code)
    return raw_json(error_body(request, status_code, message, name, code), status_code, headers)


def error_response(request: Request, error: OrthancJobsError) -> Response:
    headers = {}
    if isinstance(error, MethodNotAllowed):
        headers["Allow"] = error.allowed
    if error.status_code == 401:
        headers["WWW-Authenticate"] = 'Basic realm="Orthanc"'
    body = error_body(request, error.status_code, error.message, error.orthanc_error, error.orthanc_status)
    return raw_json(body, error.status_code, headers)


def error_from_owner(request: Request, answer: httpx.Response, body: bytes) -> Response:
    """An owner's error answer, as JSON even where Orthanc answers with an empty body (its 405 to a method
    its version lacks, e.g. DELETE /jobs/{id} before 1.12.2), with the methods it allows."""
    status_code = answer.status_code
    headers = {"Allow": answer.headers["allow"]} if "allow" in answer.headers else None
    try:
        if isinstance(orjson.loads(body), dict):
            return raw_json(body, status_code, headers=headers)
    except orjson.JSONDecodeError:
        pass
    message = f"the Orthanc server that owns this resource answered {status_code}"
    return status_error(request, status_code, message, headers)

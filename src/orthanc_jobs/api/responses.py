"""JSON answers, written the way Orthanc writes its own (errors included)."""

from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from orthanc_jobs.core import wire
from orthanc_jobs.core.errors import MethodNotAllowed, OrthancJobsError, orthanc_error_for


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

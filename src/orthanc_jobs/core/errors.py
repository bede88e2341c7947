"""The one exception hierarchy of the job-service's answers: each error carries its HTTP status and the
name and code Orthanc gives the same error, and api/responses.py writes them all the same way.

    OrthancJobsError (500)
    ├── BadRequest (400)
    ├── Unauthorized (401)
    ├── Forbidden (403)
    ├── NotFound (404)
    │   ├── UnknownJob: no server of the cluster holds this job (or output)
    │   ├── UnknownIncarnation: a plugin speaks for a process that did not register
    │   └── UnknownFile: no such file in the dashboard
    ├── MethodNotAllowed (405)
    ├── RequestTimeout (408)
    ├── Conflict (409)
    ├── PayloadTooLarge (413)
    ├── HeaderTooLarge (431)
    └── ServerUnavailable (503): no Orthanc server to ask, or too busy now

Errors a caller causes are 4xx; 503 says the cluster cannot answer now. A 503 the service raises and one it
relays from an owner carry the same Orthanc error code.
"""

from http import HTTPStatus


class OrthancJobsError(Exception):
    """Base of every error the job-service answers to a caller."""

    status_code = 500
    #: Orthanc's own error name and code, so that answers read like Orthanc's.
    orthanc_error = "Internal error"
    orthanc_status = -1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(OrthancJobsError):
    status_code = 400
    orthanc_error = "Bad request"
    orthanc_status = 8


class Unauthorized(OrthancJobsError):
    status_code = 401
    orthanc_error = "Unauthorized"
    orthanc_status = 30


class Forbidden(OrthancJobsError):
    status_code = 403
    orthanc_error = "Forbidden access"
    orthanc_status = 31


class NotFound(OrthancJobsError):
    status_code = 404
    orthanc_error = "Unknown resource"
    orthanc_status = 17


class UnknownJob(NotFound):
    """No server of the cluster holds this job (or this output of it)."""


class UnknownIncarnation(NotFound):
    """A plugin speaks for an Orthanc process that did not register (or was forgotten): it registers again."""


class UnknownFile(NotFound):
    """No such file in the dashboard."""


class MethodNotAllowed(OrthancJobsError):
    status_code = 405
    orthanc_error = "Bad request"
    orthanc_status = 8

    def __init__(self, message: str, allowed: str) -> None:
        super().__init__(message)
        self.allowed = allowed


class Conflict(OrthancJobsError):
    status_code = 409
    orthanc_error = "Bad sequence of calls"
    orthanc_status = 9


class RequestTimeout(OrthancJobsError):
    status_code = 408
    orthanc_error = "Timeout"
    orthanc_status = 16


class PayloadTooLarge(OrthancJobsError):
    status_code = 413
    orthanc_error = "Bad request"
    orthanc_status = 8


class HeaderTooLarge(OrthancJobsError):
    status_code = 431
    orthanc_error = "Bad request"
    orthanc_status = 8


class ServerUnavailable(OrthancJobsError):
    status_code = 503
    orthanc_error = "Network protocol error"
    orthanc_status = 11


def orthanc_error_for(status_code: int) -> tuple[str, int]:
    """Orthanc's error name and code for an HTTP status (for answers that came without them)."""
    for error in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        Conflict,
        RequestTimeout,
        PayloadTooLarge,
        HeaderTooLarge,
        ServerUnavailable,
    ):
        if error.status_code == status_code:
            return error.orthanc_error, error.orthanc_status
    return OrthancJobsError.orthanc_error, OrthancJobsError.orthanc_status


def http_error_name(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return "Error"

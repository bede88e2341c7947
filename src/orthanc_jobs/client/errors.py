"""Every failure of a request to the job-service, each with the exit code the command line gives it::

ClientError                 (1)
├── Unreachable             (3)  no answer: refused, timed out, broken, or a gateway without service
├── BadCredentials          (4)  the cluster refused the credentials (401)
├── NotFound                (1)  an unknown job, a missing output, a route that is not there (404)
└── ApiError                (1)  any other error answer, with the API's ``Message``
"""

__all__ = ["ApiError", "BadCredentials", "ClientError", "NotFound", "Unreachable"]


class ClientError(Exception):
    """Base of every failure of a request to the job-service."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unreachable(ClientError):
    """No answer: connection refused, timeout, a broken connection, or a load balancer without service."""

    exit_code = 3


class BadCredentials(ClientError):
    """The cluster refused the credentials (401); ``credentials_sent`` tells "refused" from "needs some"."""

    exit_code = 4

    def __init__(self, message: str, credentials_sent: bool = True) -> None:
        super().__init__(message)
        self.credentials_sent = credentials_sent


class NotFound(ClientError):
    """An unknown job, a missing output, or a route that is not there (404)."""


class ApiError(ClientError):
    """Any other error answer (or an answer that is not what the API sends)."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code

"""A small synchronous client of the job-service's public API, for the ``orthanc-jobs`` command line.

- :mod:`~orthanc_jobs.client.jobs_client`: :class:`JobsClient`, the requests (jobs, actions, downloads,
  servers, the event stream);
- :mod:`~orthanc_jobs.client.errors`: the exceptions, each with its exit code;
- :mod:`~orthanc_jobs.client.filters`: what ``GET /jobs`` is asked (:class:`JobFilter`) and answers;
- :mod:`~orthanc_jobs.client.sse`: the event stream's parser.

Import from here: the names below are the client's public surface.
"""

from orthanc_jobs.client.errors import ApiError, BadCredentials, ClientError, NotFound, Unreachable
from orthanc_jobs.client.filters import JobFilter, JobPage
from orthanc_jobs.client.jobs_client import DEFAULT_ORTHANC_PATH, DEFAULT_URL, JobsClient
from orthanc_jobs.client.sse import ServerSentEvent, SseDecoder, parse_sse, sse_lines

__all__ = [
    "DEFAULT_ORTHANC_PATH",
    "DEFAULT_URL",
    "ApiError",
    "BadCredentials",
    "ClientError",
    "JobFilter",
    "JobPage",
    "JobsClient",
    "NotFound",
    "ServerSentEvent",
    "SseDecoder",
    "Unreachable",
    "parse_sse",
    "sse_lines",
]

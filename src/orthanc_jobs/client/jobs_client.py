"""The cluster's jobs through the load balancer: :class:`JobsClient`, synchronous, over httpx.

The jobs routes are Orthanc's, under the load balancer's Orthanc path (``<url>/orthanc/jobs...``); the
service's own routes are under ``<url>/orthanc-jobs/``. Every failure is a
:class:`~orthanc_jobs.client.errors.ClientError`.
"""

import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from orthanc_jobs import SERVICE_PREFIX, __version__
from orthanc_jobs.client.errors import ApiError, BadCredentials, ClientError, NotFound, Unreachable
from orthanc_jobs.client.filters import JobFilter, JobPage
from orthanc_jobs.client.sse import ServerSentEvent, SseDecoder, sse_lines
from orthanc_jobs.core.model import TERMINAL_STATES, JobAction, JobState

__all__ = ["DEFAULT_ORTHANC_PATH", "DEFAULT_URL", "JobsClient"]

DEFAULT_URL = "http://127.0.0.1:8042"
DEFAULT_ORTHANC_PATH = "/orthanc"

# When an action has had its effect, as seen in the job's state (Orthanc applies some a moment later).
_SETTLED: dict[str, Callable[[str], bool]] = {
    JobAction.PAUSE: lambda state: state == JobState.PAUSED or state in TERMINAL_STATES,
    JobAction.CANCEL: lambda state: state in TERMINAL_STATES,
    JobAction.RESUME: lambda state: state != JobState.PAUSED,
    JobAction.RESUBMIT: lambda state: state != JobState.FAILURE,
}
# The event stream sends a keepalive every 15 s: this much silence means the connection is dead.
_EVENTS_READ_TIMEOUT = 45.0
_EVERY_JOB = JobFilter()
_ERRNO = re.compile(r"^\[Errno -?\d+\]\s*")


def _api_message(response: httpx.Response) -> str | None:
    """The ``Message`` of an error answer in Orthanc's shape (with Orthanc's ``Details`` when present)."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("Message"), str):
        return None
    message, details = body["Message"], body.get("Details")
    if isinstance(details, str) and details and details != message:
        message = f"{message}: {details}"
    return " ".join(message.split()) or None


def _segment(value: str) -> str | None:
    """``value`` as one path segment, or None if it cannot be one: the load balancer decodes ``%2F`` and
    resolves ``..`` before routing, so such an id would reach another Orthanc route with the caller's
    credentials."""
    if not value or "/" in value or "\\" in value or set(value) == {"."}:
        return None
    return quote(value, safe="")


def _listing_params(where: JobFilter, limit: int | None, offset: int) -> list[tuple[str, str]]:
    """A listing's filters and paging, as query parameters."""
    params = where.params()
    if limit is not None:
        params.append(("limit", str(limit)))
    if offset:
        params.append(("offset", str(offset)))
    return params


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class JobsClient:
    """The cluster's jobs through the load balancer (``url``), with the cluster's credentials.

    ``transport`` replaces the network (tests give an ``httpx.MockTransport``); ``clock`` and ``sleep``
    are how the client waits (for an action to show, before reconnecting to the event stream).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        orthanc_path: str = DEFAULT_ORTHANC_PATH,
        user: str | None = None,
        password: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url.rstrip("/")
        path = orthanc_path.strip("/")
        self.jobs_url = f"{self.url}/{path}/jobs" if path else f"{self.url}/jobs"
        self.service_url = self.url + SERVICE_PREFIX
        self.has_credentials = bool(user)
        self._timeout = timeout
        self._clock = clock
        self._sleep = sleep
        self._http = httpx.Client(
            auth=httpx.BasicAuth(user, password or "") if user else None,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"User-Agent": f"orthanc-jobs-cli/{__version__}"},
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "JobsClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- jobs -----------------------------------------------------------------------------------------

    def list_jobs(
        self,
        where: JobFilter = _EVERY_JOB,
        *,
        limit: int | None = None,
        offset: int = 0,
        expand: bool = True,
    ) -> JobPage:
        """``GET /jobs`` with the service's filters and paging, in creation order."""
        params = ([("expand", "")] if expand else []) + _listing_params(where, limit, offset)
        response = self._request("GET", self.jobs_url, params=params)
        jobs = self._json(response)
        if not isinstance(jobs, list):
            raise ApiError(f"{self.jobs_url} answered something else than a list of jobs")
        total = response.headers.get("x-total-count")
        return JobPage(jobs, int(total) if total and total.isdigit() else None, offset)

    def export(
        self, where: JobFilter = _EVERY_JOB, output: str = "csv", *, limit: int | None = None, offset: int = 0
    ) -> Iterator[bytes]:
        """``GET /orthanc-jobs/export``: the listing's jobs as ``output`` (csv or json), in chunks as they
        come (a large export is never whole in memory)."""
        params = [("format", output), *_listing_params(where, limit, offset)]
        url = f"{self.service_url}/export"
        try:
            with self._http.stream("GET", url, params=tuple(params)) as response:
                if response.status_code != 200:
                    response.read()
                    self._check(response)
                    raise ApiError(f"{url} answered {response.status_code} {response.reason_phrase}")
                yield from response.iter_bytes()
        except httpx.RequestError as error:
            raise self._failure(error) from None

    def latest_jobs(self, where: JobFilter = _EVERY_JOB, limit: int = 50) -> JobPage:
        """The newest ``limit`` jobs that match (the last page of the listing)."""
        total = self.list_jobs(where, limit=0).total or 0
        return self.list_jobs(where, limit=limit, offset=max(0, total - limit))

    def get_job(self, job_id: str) -> dict[str, Any]:
        """``GET /jobs/{id}``: the job as Orthanc describes it, plus its ``Server``."""
        return self._job_object(self._request("GET", self._job_url(job_id), job_id=job_id))

    def act(self, job_id: str, action: str, settle: float = 3.0) -> dict[str, Any]:
        """``POST /jobs/{id}/{action}`` (pause, resume, cancel, resubmit), then the job as it is after the
        action: read back until the action shows (at most ``settle`` seconds; Orthanc cancels a running job
        when its current step ends)."""
        try:
            self._request("POST", self._job_url(job_id, action), job_id=job_id, json={})
        except ApiError as error:
            raise ApiError(f"cannot {action} job {job_id}: {error.message}", error.status_code) from None
        deadline = self._clock() + settle
        settled = _SETTLED.get(action, lambda state: True)
        while True:
            job = self.get_job(job_id)
            if settled(str(job.get("State"))) or self._clock() >= deadline:
                return job
            self._sleep(0.2)

    def download(
        self,
        job_id: str,
        destination: Path,
        key: str = "archive",
        progress: Callable[[int, int | None], None] | None = None,
    ) -> int:
        """Stream the output ``key`` of a job to ``destination`` and return its size.

        ``progress(received, total)`` is called as bytes arrive (``total`` from Content-Length, or None).
        The file appears only once complete: the bytes go to a temporary file next to it, renamed at the end.
        """
        segment = _segment(key)
        if segment is None:
            raise NotFound(f"job {job_id} has no output {key!r}")
        url = self._job_url(job_id, segment)
        try:
            with self._http.stream("GET", url) as response:
                if response.status_code != 200:
                    response.read()
                    if response.status_code == 404 and _api_message(response) is not None:
                        raise self._missing_output(job_id, key, _api_message(response))
                    self._check(response, job_id)
                    raise ApiError(f"{url} answered {response.status_code} {response.reason_phrase}")
                length = response.headers.get("content-length")
                total = int(length) if length and length.isdigit() else None
                return self._save(response, destination, total, progress)
        except httpx.RequestError as error:
            raise self._failure(error) from None

    def _save(
        self,
        response: httpx.Response,
        destination: Path,
        total: int | None,
        progress: Callable[[int, int | None], None] | None,
    ) -> int:
        directory = destination.parent
        descriptor, temporary = tempfile.mkstemp(
            dir=directory, prefix=f".{destination.name}.", suffix=".part"
        )
        try:
            os.fchmod(descriptor, 0o666 & ~_umask())  # as an ordinary new file (mkstemp makes it private)
            with os.fdopen(descriptor, "wb") as file:
                if progress is not None:
                    progress(0, total)
                for chunk in response.iter_bytes():
                    file.write(chunk)
                    if progress is not None:
                        progress(response.num_bytes_downloaded, total)
                size = file.tell()
            if total is not None and response.num_bytes_downloaded != total:
                raise Unreachable(
                    f"{self.url} sent {response.num_bytes_downloaded} of {total} bytes and stopped"
                )
            os.replace(temporary, destination)
            return size
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def _missing_output(self, job_id: str, key: str, message: str | None) -> NotFound:
        job = self.get_job(job_id)  # NotFound("no job ...") if the job itself is unknown
        why = f"state {job.get('State')}"
        if (job.get("Server") or {}).get("HistoryOnly"):
            why += ", and its Orthanc server no longer holds it"
        return NotFound(f"job {job_id} has no output {key!r} ({why}): {message}")

    # ---- the service's own routes ---------------------------------------------------------------------

    def servers(self) -> list[dict[str, Any]]:
        """``GET /orthanc-jobs/servers``: every Orthanc server, its status and its job counts."""
        url = f"{self.service_url}/servers"
        servers = self._json(self._request("GET", url))
        if not isinstance(servers, list):
            raise ApiError(f"{url} answered something else than a list of servers")
        return servers

    def act_on_many(
        self,
        action: str,
        where: JobFilter,
        *,
        dry_run: bool = False,
        expected: int | None = None,
    ) -> dict[str, Any]:
        """``POST /orthanc-jobs/actions``: ``action`` on every job ``where`` matches. A dry run answers
        how many match and which would be refused; a run (with the count the dry run gave as ``expected``,
        refused if it changed) answers where to follow it (``Path``)."""
        criteria: dict[str, list[str]] = {}
        for name, value in where.params():
            criteria.setdefault(name, []).append(value)
        body: dict[str, Any] = {"Action": action, "Filter": criteria, "DryRun": dry_run}
        if expected is not None:
            body["Expected"] = expected
        return self._object(self._request("POST", f"{self.service_url}/actions", json=body))

    def action_progress(self, path: str) -> dict[str, Any]:
        """How far an action on many jobs went (its ``Path``), with a result per job."""
        return self._object(self._request("GET", self.url + path))

    def events(
        self,
        last_event_id: str = "",
        *,
        on_connect: Callable[[], None] | None = None,
        on_disconnect: Callable[[ClientError], None] | None = None,
        read_timeout: float = _EVENTS_READ_TIMEOUT,
        max_delay: float = 30.0,
    ) -> Iterator[ServerSentEvent]:
        """The event stream (``GET /orthanc-jobs/events``), for ever.

        Errors of the first connection are raised. Once connected, a lost connection (or one silent for
        ``read_timeout`` seconds, which keepalives prevent) is reported to ``on_disconnect`` and opened
        again with ``Last-Event-ID``, after the delay the server asked for (``retry``, else 1 s), doubled at
        each failure up to ``max_delay``. ``on_connect`` runs each time the stream is open, before its
        first event: the moment to (re)load the state that the events then update.
        """
        url = f"{self.service_url}/events"
        delay = 1.0
        failures = 0
        connected = False
        while True:
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
            if last_event_id:
                headers["Last-Event-ID"] = last_event_id
            timeout = httpx.Timeout(self._timeout, connect=min(self._timeout, 10.0), read=read_timeout)
            try:
                with self._http.stream("GET", url, headers=headers, timeout=timeout) as response:
                    if response.status_code != 200:
                        response.read()
                        if response.status_code == 404 and not connected:
                            raise NotFound(f"{url} answered 404: this job-service has no event stream")
                        self._check(response)
                        raise ApiError(f"{url} answered {response.status_code} instead of an event stream")
                    content_type = response.headers.get("content-type", "")
                    if not content_type.startswith("text/event-stream"):
                        raise ApiError(f"{url} answered {content_type or 'no content type'}, not events")
                    connected, failures = True, 0
                    if on_connect is not None:
                        on_connect()
                    decoder = SseDecoder(last_event_id)
                    for line in sse_lines(response.iter_bytes()):
                        event = decoder.feed(line)
                        if decoder.retry is not None:
                            delay = decoder.retry / 1000
                        last_event_id = decoder.last_event_id
                        if event is not None:
                            yield event
                lost: ClientError = Unreachable(f"{self.url} closed the event stream")
            except httpx.RequestError as error:
                lost = self._failure(error)
            except (Unreachable, ApiError) as error:
                transient = isinstance(error, Unreachable) or error.status_code == 503
                if not (connected and transient):
                    raise
                lost = error
            if not connected:
                raise lost
            if on_disconnect is not None:
                on_disconnect(lost)
            self._sleep(min(delay * 2**failures, max_delay))
            failures += 1

    # ---- plumbing -------------------------------------------------------------------------------------

    def _job_url(self, job_id: str, *rest: str) -> str:
        segment = _segment(job_id)
        if segment is None:
            raise NotFound(f"no job {job_id}")
        return "/".join((self.jobs_url, segment, *rest))

    def _request(self, method: str, url: str, job_id: str | None = None, **options: Any) -> httpx.Response:
        try:
            response = self._http.request(method, url, **options)
        except httpx.RequestError as error:
            raise self._failure(error) from None
        self._check(response, job_id)
        return response

    def _check(self, response: httpx.Response, job_id: str | None = None) -> None:
        status = response.status_code
        if status < 300:
            return
        message = _api_message(response)
        where = f"{response.request.method} {response.request.url}"
        if status == 401:
            raise BadCredentials(message or f"{where} answered 401", self.has_credentials)
        if status == 404:
            if job_id is not None and message is not None:
                raise NotFound(f"no job {job_id}")
            if message is None and str(response.request.url).startswith(self.jobs_url):
                message = f"{where} answered 404: no jobs API there (check the URL and the Orthanc path)"
            raise NotFound(message or f"{where} answered 404 (is the job-service behind {self.url}?)")
        if status in (502, 504) and message is None:
            raise Unreachable(f"{self.url} answered {status}: the job-service behind it does not answer")
        raise ApiError(message or f"{where} answered {status} {response.reason_phrase}", status)

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ApiError(f"{response.request.url} answered something else than JSON") from None

    def _object(self, response: httpx.Response) -> dict[str, Any]:
        answer = self._json(response)
        if not isinstance(answer, dict):
            raise ApiError(f"{response.request.url} answered something else than a JSON object")
        return answer

    def _job_object(self, response: httpx.Response) -> dict[str, Any]:
        job = self._json(response)
        if not isinstance(job, dict):
            raise ApiError(f"{response.request.url} answered something else than a job")
        return job

    def _failure(self, error: httpx.RequestError) -> ClientError:
        if not isinstance(error, httpx.TransportError):  # an undecodable body, too many redirects
            return ApiError(f"{error.request.url}: {error}")
        if isinstance(error, httpx.TimeoutException):
            reason = "no answer in time"
        else:
            reason = _ERRNO.sub("", str(error)) or type(error).__name__
        return Unreachable(f"cannot reach the job-service at {self.url}: {reason}")

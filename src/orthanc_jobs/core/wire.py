"""Every shape the job-service writes on the wire, in one place: a job as Orthanc writes it with its
``Server`` field, a server's entry, an error body as Orthanc writes its own, the event stream's frames, and
the export's CSV rows.

The API's answers, the event stream and the CLI's reading of them cannot drift apart: they all come from
here.
"""

import csv
import io
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from orthanc_jobs.core.changes import ActionProgress, Change, JobChanged, JobRemoved, JobStuck, ServerChanged
from orthanc_jobs.core.errors import http_error_name
from orthanc_jobs.core.model import Job, Server, orthanc_timestamp
from orthanc_jobs.core.registry import Registry

__all__ = [
    "CSV_COLUMNS",
    "csv_row",
    "error_body",
    "expanded_jobs",
    "expanded_jobs_chunks",
    "frame_for",
    "job_json",
    "jobs_csv",
    "server_entry",
    "server_field",
    "sse_frame",
]


def server_field(registry: Registry, job: Job, stuck_since: float | None = None) -> bytes:
    """The ``Server`` field of a job: its owner, the owner's status, whether the owner still has it, and
    whether it is stuck (running, its progress still since ``StuckSince``)."""
    server = registry.server_by_url(job.server_url)
    if stuck_since is None:
        stuck_since = registry.stuck_since(job)
    return orjson.dumps(
        {
            "Name": server.name if server is not None else None,
            "Url": job.server_url,
            "Status": registry.server_status(server) if server is not None else "unknown",
            "HistoryOnly": registry.is_history_only(job),
            "Stuck": stuck_since is not None,
            "StuckSince": orthanc_timestamp(stuck_since) if stuck_since is not None else None,
        }
    )


def job_json(job: Job, server_json: bytes) -> bytes:
    """A job as Orthanc writes it, with one more field, ``Server``, naming its owner."""
    return job.json_head + b',"Server":' + server_json + b"}"


def expanded_jobs(registry: Registry, jobs: Iterable[Job]) -> bytes:
    """``GET /jobs?expand``: the jobs, each as ``job_json`` (one ``Server`` field per owner, reused)."""
    return b"[" + b",".join(_each_job_json(registry, jobs)) + b"]"


def expanded_jobs_chunks(registry: Registry, jobs: Iterable[Job], per_chunk: int = 500) -> Iterator[bytes]:
    """``expanded_jobs``, in chunks of ``per_chunk`` jobs: a large export is sent as it is written."""
    parts = _each_job_json(registry, jobs)
    opening = b"["
    while chunk := list(itertools.islice(parts, per_chunk)):
        yield opening + b",".join(chunk)
        opening = b","
    yield b"]" if opening == b"," else b"[]"


def _each_job_json(registry: Registry, jobs: Iterable[Job]) -> Iterator[bytes]:
    fields: dict[tuple[str, str, bool, float | None], bytes] = {}
    for job in jobs:
        stuck_since = registry.stuck_since(job)
        key = (job.server_url, job.incarnation, job.history_only, stuck_since)
        field = fields.get(key)
        if field is None:
            field = fields[key] = server_field(registry, job, stuck_since)
        yield job_json(job, field)


#: The columns of the CSV export, in order: Orthanc's field names, ``Server`` the owner's Name, and
#: ``Description`` the Content's (archives, media, modifications... have one).
CSV_COLUMNS = (
    "ID",
    "Type",
    "State",
    "Server",
    "Progress",
    "CreationTime",
    "CompletionTime",
    "ErrorCode",
    "ErrorDescription",
    "Description",
)


# What makes a spreadsheet read a cell as a formula (OWASP's "CSV injection").
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> Any:
    """A text that a spreadsheet would take for a formula behind a single quote, shown as text; numbers
    (an ``ErrorCode`` of -1) as they are."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def csv_row(registry: Registry, job: Job) -> list[Any]:
    """A job as a row of ``CSV_COLUMNS`` (a field it does not have: empty)."""
    content = job.content
    server = registry.server_by_url(job.server_url)
    details = content.get("Content")
    description = details.get("Description") if isinstance(details, dict) else None
    row = [
        job.id,
        job.type,
        job.state,
        server.name if server is not None else "",
        *(content.get(name, "") for name in CSV_COLUMNS[4:9]),
        description if isinstance(description, str) else "",
    ]
    return [_csv_cell(value) for value in row]


def jobs_csv(registry: Registry, jobs: Iterable[Job], per_chunk: int = 500) -> Iterator[bytes]:
    """The jobs as CSV (RFC 4180: a header row, CRLF line ends, quoted where needed), in UTF-8, in chunks
    of ``per_chunk`` jobs."""
    rows = (csv_row(registry, job) for job in jobs)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    while True:
        chunk = list(itertools.islice(rows, per_chunk))
        writer.writerows(chunk)
        yield buffer.getvalue().encode()
        if len(chunk) < per_chunk:
            return
        buffer.seek(0)
        buffer.truncate()


def server_entry(registry: Registry, server: Server) -> dict[str, Any]:
    """A server as ``/orthanc-jobs/servers`` lists it."""
    return {
        "Name": server.name,
        "Url": server.url,
        "Status": registry.server_status(server),
        "Incarnation": server.incarnation,
        "OrthancVersion": server.orthanc_version,
        "RegisteredAt": orthanc_timestamp(server.registered_at),
        "LastSeen": orthanc_timestamp(server.last_seen),
        "LastResync": orthanc_timestamp(server.last_resync) if server.last_resync else None,
        "Jobs": registry.job_counts(server),
        "Gap": _gap_entry(server.gap),
    }


def _gap_entry(gap: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the server's plugin let go while the job-service was unreachable, and when (None: nothing)."""
    if gap is None:
        return None
    return {
        "DroppedEvents": gap["DroppedEvents"],
        "DroppedJobJson": gap["DroppedJobJson"],
        "From": orthanc_timestamp(gap["First"]),
        "To": orthanc_timestamp(gap["Last"]),
    }


def error_body(
    method: str, uri: str, status_code: int, message: str, orthanc_error: str, orthanc_status: int
) -> bytes:
    """An error answer, in the fields and order Orthanc writes its own."""
    return orjson.dumps(
        {
            "HttpError": http_error_name(status_code),
            "HttpStatus": status_code,
            "Message": message,
            "Method": method,
            "OrthancError": orthanc_error,
            "OrthancStatus": orthanc_status,
            "Uri": uri,
        }
    )


def frame_for(registry: Registry, change: Change) -> tuple[str, bytes] | None:
    """The event stream's event for a change of the registry (None: nothing to show)."""
    match change:
        case JobChanged(job) | JobStuck(job):
            return "job", job_json(job, server_field(registry, job))
        case ServerChanged(server):
            return "server", orjson.dumps(server_entry(registry, server))
        case JobRemoved(job_id):
            return "removed", orjson.dumps({"ID": job_id})
        case ActionProgress(_, summary):
            return "action", summary
    return None


def sse_frame(event_id: int, kind: str, data: bytes) -> bytes:
    """One Server-Sent Event."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event_id, kind.encode(), data)

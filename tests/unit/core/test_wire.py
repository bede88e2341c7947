"""The wire shapes written in one place, and the registry's typed notices that feed the event stream."""

import orjson

from orthanc_jobs.core.changes import Change, JobChanged, JobRemoved, ServerChanged, ServerSeen
from orthanc_jobs.core.wire import error_body, frame_for, job_json, server_field, sse_frame
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

    assert heard == [ServerSeen(server), JobChanged(job), JobRemoved(JOB_ID)]
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

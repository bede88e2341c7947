"""The client's requests and errors, against an httpx mock transport."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from orthanc_jobs.client import ApiError, BadCredentials, JobFilter, JobsClient, NotFound, Unreachable
from tests.unit.client.fakes import JOB, URL, client_for, job, orthanc_error, sse


def test_routes_under_the_orthanc_path() -> None:
    for path, jobs_url in (("/orthanc", "/orthanc/jobs"), ("orthanc/", "/orthanc/jobs"), ("", "/jobs")):
        client = JobsClient(URL + "/", path)
        assert client.jobs_url == URL + jobs_url
        assert client.service_url == URL + "/orthanc-jobs"


def test_list_sends_filters_and_paging_and_reads_the_total() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        assert request.headers["authorization"].startswith("Basic ")
        return httpx.Response(200, json=[job("a")], headers={"X-Total-Count": "12"})

    page = client_for(handler).list_jobs(JobFilter.of(["Success"], ["Archive"]), limit=5, offset=10)
    assert (page.jobs, page.total, page.offset) == ([job("a")], 12, 10)
    assert seen[0].url.path == "/orthanc/jobs"
    assert seen[0].url.params.multi_items() == [
        ("expand", ""),
        ("status", "Success"),
        ("type", "Archive"),
        ("limit", "5"),
        ("offset", "10"),
    ]


def test_latest_jobs_is_the_last_page() -> None:
    offsets = []

    def handler(request: httpx.Request) -> httpx.Response:
        offsets.append((request.url.params.get("limit"), request.url.params.get("offset")))
        return httpx.Response(200, json=[], headers={"X-Total-Count": "120"})

    client_for(handler).latest_jobs(limit=50)
    assert offsets == [("0", None), ("50", "70")]


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        (orthanc_error(401, "refused"), BadCredentials, "refused"),
        (orthanc_error(404, "unknown job"), NotFound, f"no job {JOB}"),
        (httpx.Response(404, text="<html>"), NotFound, "check the URL and the Orthanc path"),
        (orthanc_error(409, "gone with its process"), ApiError, "gone with its process"),
        (httpx.Response(400, json={"Message": "Bad", "Details": "why"}), ApiError, "Bad: why"),
        (httpx.Response(500, text="oops"), ApiError, "answered 500 Internal Server Error"),
        (httpx.Response(502, text="<html>bad gateway"), Unreachable, "does not answer"),
        (httpx.Response(200, text="<html>"), ApiError, "something else than JSON"),
        (
            httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=iter([b"no gzip"])),
            ApiError,
            "decompressing",
        ),
    ],
)
def test_error_answers(answer: httpx.Response, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as raised:
        client_for(lambda request: answer).get_job(JOB)
    assert message in str(raised.value)


def test_no_answer_names_the_url() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with pytest.raises(
        Unreachable, match=r"cannot reach the job-service at http://lb.test: Connection refused$"
    ):
        client_for(handler).servers()


@pytest.mark.parametrize("job_id", ["", ".", "..", "../system", "a/b", "a\\b"])
def test_ids_that_would_leave_the_jobs_route_are_refused_without_a_request(job_id: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"no request expected: {request.url}")

    with pytest.raises(NotFound, match="no job"):
        client_for(handler).get_job(job_id)
    with pytest.raises(NotFound, match="no job"):
        client_for(handler).act(job_id, "pause")


def test_other_ids_are_one_escaped_segment() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.raw_path == b"/orthanc/jobs/a%3Fb%23c%20d"
        return orthanc_error(404, "unknown")

    with pytest.raises(NotFound, match="no job a"):
        client_for(handler).get_job("a?b#c d")


def test_an_action_returns_the_job_once_the_action_shows() -> None:
    states = iter(["Running", "Running", "Failure"])
    requests = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(f"{request.method} {request.url.path}")
        if request.method == "POST":
            return httpx.Response(200, json={})
        return httpx.Response(200, json=job(JOB, next(states)))

    sleeps: list[float] = []
    assert client_for(handler, sleep=sleeps.append).act(JOB, "cancel")["State"] == "Failure"
    assert requests == [f"POST /orthanc/jobs/{JOB}/cancel"] + [f"GET /orthanc/jobs/{JOB}"] * 3
    assert sleeps == [0.2, 0.2]


def test_a_refused_action_says_which() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"Message": "Bad sequence of calls"})

    with pytest.raises(ApiError, match=f"cannot resume job {JOB}: Bad sequence of calls") as raised:
        client_for(handler).act(JOB, "resume")
    assert raised.value.status_code == 400


def test_download_streams_to_the_file_with_progress(tmp_path: Path) -> None:
    body = b"PK" + bytes(range(256)) * 100

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/orthanc/jobs/{JOB}/archive"
        return httpx.Response(
            200, content=iter([body[:1000], body[1000:]]), headers={"Content-Length": str(len(body))}
        )

    seen: list[tuple[int, int | None]] = []
    target = tmp_path / "out.zip"
    size = client_for(handler).download(JOB, target, progress=lambda got, total: seen.append((got, total)))
    assert size == len(body) and target.read_bytes() == body
    assert seen[0] == (0, len(body)) and seen[-1] == (len(body), len(body))
    assert [p.name for p in tmp_path.iterdir()] == ["out.zip"]


def test_a_broken_download_leaves_no_file(tmp_path: Path) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"PK partial"
        raise httpx.ReadError("connection reset")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=chunks())

    with pytest.raises(Unreachable, match="connection reset"):
        client_for(handler).download(JOB, tmp_path / "out.zip")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_output_is_told_apart_from_a_missing_job(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/archive"):
            return httpx.Response(404, json={"Message": "Inexistent item", "Details": "no such output"})
        return httpx.Response(200, json=job(JOB, "Running"))

    with pytest.raises(NotFound, match=r"has no output 'archive' \(state Running\): Inexistent item"):
        client_for(handler).download(JOB, tmp_path / "out.zip")

    def unknown(request: httpx.Request) -> httpx.Response:
        return orthanc_error(404, "unknown job")

    with pytest.raises(NotFound, match=f"^no job {JOB}$"):
        client_for(unknown).download(JOB, tmp_path / "out.zip")
    assert list(tmp_path.iterdir()) == []


def test_events_reconnect_with_last_event_id() -> None:
    sleeps: list[float] = []
    answers = iter(
        [
            sse('retry: 200\nid: 4\nevent: job\ndata: {"ID": "a"}\n\n: keepalive\n\n'),
            httpx.Response(502, text="<html>"),
            sse('id: 5\nevent: removed\ndata: {"ID": "a"}\n\n'),
        ]
    )
    last_ids = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/orthanc-jobs/events"
        last_ids.append(request.headers.get("last-event-id"))
        return next(answers)

    connects, losses = [], []
    stream = client_for(handler, sleep=sleeps.append).events(
        on_connect=lambda: connects.append(1), on_disconnect=losses.append
    )
    events = [next(stream), next(stream)]
    assert [(e.event, e.id) for e in events] == [("job", "4"), ("removed", "5")]
    assert last_ids == [None, "4", "4"]
    assert len(connects) == 2
    assert [type(loss) for loss in losses] == [Unreachable, Unreachable]
    assert sleeps == [0.2, 0.4]  # the server's retry, doubled while failing


def test_events_first_connection_errors_are_raised() -> None:
    for answer, error in (
        (orthanc_error(401, "refused"), BadCredentials),
        (httpx.Response(404, json={"detail": "Not Found"}), NotFound),
        (httpx.Response(200, json=[]), ApiError),
        (httpx.Response(502, text="<html>"), Unreachable),
    ):
        with pytest.raises(error):
            next(client_for(lambda request, answer=answer: answer).events())


def test_events_refused_credentials_after_a_reconnection_are_raised() -> None:
    answers = iter([sse('id: 1\nevent: job\ndata: {"ID": "a"}\n\n'), orthanc_error(401, "refused")])
    stream = client_for(lambda request: next(answers), sleep=lambda seconds: None).events()
    assert next(stream).id == "1"
    with pytest.raises(BadCredentials):
        next(stream)


def test_export_streams_the_listing_in_the_format_asked() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.params.get("format") == "xml":
            return orthanc_error(400, "format: 'xml' is not one of csv, json")
        return httpx.Response(200, content=b"ID,Type\r\na,Archive\r\n", headers={"Content-Type": "text/csv"})

    client = client_for(handler)
    exported = b"".join(client.export(JobFilter.of(text="ward"), "csv", limit=10, offset=5))
    assert exported == b"ID,Type\r\na,Archive\r\n"
    assert seen[0].url.path == "/orthanc-jobs/export"
    assert seen[0].url.params.multi_items() == [
        ("format", "csv"),
        ("q", "ward"),
        ("limit", "10"),
        ("offset", "5"),
    ]
    with pytest.raises(ApiError, match="'xml' is not one of csv, json"):
        b"".join(client.export(output="xml"))

"""The command line's client: event-stream parsing, the live job table, and the client's requests and errors
against an httpx mock transport (tests/e2e/test_cli.py runs the command itself against a real cluster)."""

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from orthanc_jobs import cli
from orthanc_jobs.client import (
    ApiError,
    BadCredentials,
    JobFilter,
    JobsClient,
    LiveJobs,
    NotFound,
    ServerSentEvent,
    SseDecoder,
    Unreachable,
    parse_sse,
    sse_lines,
)

URL = "http://lb.test"
JOB = "6f1c1d5e-8f0b-4d2b-9a55-3d0f6b0c1a11"


def decode(text: str) -> list[ServerSentEvent]:
    return list(parse_sse([text.encode()]))


def job(job_id: str, state: str = "Running", created: str = "20250101T000000.000000", **more: Any) -> dict:
    server = {"Name": "orthanc-1", "Url": "http://o1", "Status": "alive", "HistoryOnly": False}
    return {
        "ID": job_id,
        "State": state,
        "Type": "Archive",
        "CreationTime": created,
        "Server": server,
        **more,
    }


def job_event(data: dict, event_id: int = 1) -> ServerSentEvent:
    return ServerSentEvent("job", json.dumps(data), str(event_id))


# ---- Server-Sent Events -------------------------------------------------------------------------------


def test_lines_end_with_crlf_lf_or_cr_even_across_chunks() -> None:
    chunks = [b"a\r", b"\nb\n", b"c\r", b"d\r\n\r", b"\n", b"tail without end"]
    assert list(sse_lines(chunks)) == ["a", "b", "c", "d", ""]


def test_unicode_line_separators_stay_inside_a_line() -> None:
    text = 'data: {"Description": "a\u2028b\u0085c"}\n\n'
    [event] = decode(text)
    assert event.json() == {"Description": "a\u2028b\u0085c"}


def test_a_line_too_long_is_refused() -> None:
    with pytest.raises(ApiError):
        list(sse_lines([b"x" * 100, b"y" * 100], max_line=150))


def test_the_job_service_messages() -> None:
    stream = (
        ": connected\n\n"
        'id: 7\nevent: job\ndata: {"ID": "x"}\n\n'
        ": keepalive\n\n"
        'id: 8\nevent: removed\ndata: {"ID": "x"}\n\n'
        "event: reset\ndata: {}\n\n"
    )
    events = decode(stream)
    assert [(e.event, e.id, e.json()) for e in events] == [
        ("job", "7", {"ID": "x"}),
        ("removed", "8", {"ID": "x"}),
        ("reset", "8", {}),  # an event without id keeps the last one
    ]


def test_the_standard_s_parsing_rules() -> None:
    stream = "\ufeffdata:no space\ndata:  two spaces\ndata\n\nevent: ignored\n\nid: 3\0\ndata: x\n\n"
    first, second = decode(stream)
    assert first == ServerSentEvent("message", "no space\n two spaces\n", "")
    # an event without data is not dispatched (and its type is forgotten); an id with NUL is ignored
    assert second == ServerSentEvent("message", "x", "")


def test_retry_and_unknown_fields() -> None:
    decoder = SseDecoder(last_event_id="5")
    for line in ["retry: 2500", "retry: soon", "unknown: field", "data: y"]:
        assert decoder.feed(line) is None
    assert decoder.feed("") == ServerSentEvent("message", "y", "5")
    assert decoder.retry == 2500


# ---- filters and the live table -----------------------------------------------------------------------


def test_filters_split_values_and_match_like_the_api() -> None:
    where = JobFilter.of(["success,Failure"], ["archive"], ["orthanc-1"])
    assert where.params() == [
        ("status", "success"),
        ("status", "Failure"),
        ("type", "archive"),
        ("server", "orthanc-1"),
    ]
    assert where.matches(job("a", "Success"))
    assert not where.matches(job("a", "Running"))
    assert not JobFilter.of(types=["DicomModalityStore"]).matches(job("a"))
    assert JobFilter.of(servers=["http://o1"]).matches(job("a"))
    assert not JobFilter.of(servers=["orthanc-2"]).matches(job("a"))
    assert JobFilter().matches({"ID": "no fields at all"})


def test_live_jobs_keep_the_newest_that_match() -> None:
    live = LiveJobs(JobFilter.of(["Running", "Pending"]), limit=2)
    live.load([job("a", created="20250101T000001"), job("b", created="20250101T000002")], servers=[])
    assert live.apply(job_event(job("c", created="20250101T000003"))) is False
    assert [j["ID"] for j in live.rows()] == ["b", "c"]  # the oldest left
    live.apply(job_event(job("b", "Success", created="20250101T000002")))  # out of the filter
    assert [j["ID"] for j in live.rows()] == ["c"]
    live.apply(job_event(job("c", "Pending", created="20250101T000003", Progress=50)))
    assert live.rows()[0]["Progress"] == 50
    live.apply(ServerSentEvent("removed", json.dumps({"ID": "c"})))
    assert live.rows() == []


def test_live_jobs_servers_reset_and_junk() -> None:
    live = LiveJobs()
    server = {"Name": "orthanc-1", "Url": "http://o1", "Status": "stopped"}
    live.apply(ServerSentEvent("server", json.dumps(server)))
    assert live.servers == {"http://o1": server}
    assert live.apply(ServerSentEvent("reset", "{}")) is True
    for junk in (
        ServerSentEvent("job", "not json"),
        ServerSentEvent("job", "[1]"),
        ServerSentEvent("x", "{}"),
    ):
        assert live.apply(junk) is False
    assert live.jobs == {}


# ---- the client against a mock transport --------------------------------------------------------------


def client_for(handler: Callable[[httpx.Request], httpx.Response], **options: Any) -> JobsClient:
    return JobsClient(URL, user="demo", password="demo", transport=httpx.MockTransport(handler), **options)


def orthanc_error(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"HttpStatus": status, "Message": message})


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

    assert client_for(handler).act(JOB, "cancel")["State"] == "Failure"
    assert requests == [f"POST /orthanc/jobs/{JOB}/cancel"] + [f"GET /orthanc/jobs/{JOB}"] * 3


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


# ---- the event stream ---------------------------------------------------------------------------------


def sse(text: str) -> httpx.Response:
    return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=text.encode())


def test_events_reconnect_with_last_event_id(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr("orthanc_jobs.client.time.sleep", sleeps.append)
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
    stream = client_for(handler).events(on_connect=lambda: connects.append(1), on_disconnect=losses.append)
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


def test_events_refused_credentials_after_a_reconnection_are_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("orthanc_jobs.client.time.sleep", lambda seconds: None)
    answers = iter([sse('id: 1\nevent: job\ndata: {"ID": "a"}\n\n'), orthanc_error(401, "refused")])
    stream = client_for(lambda request: next(answers)).events()
    assert next(stream).id == "1"
    with pytest.raises(BadCredentials):
        next(stream)


# ---- the commands' exit codes, without a cluster ------------------------------------------------------


def run(
    monkeypatch: pytest.MonkeyPatch, handler: Callable[[httpx.Request], httpx.Response], *args: str
) -> Any:
    real = cli.JobsClient

    def with_mock(*options: Any, **keywords: Any) -> JobsClient:
        return real(*options, **keywords, transport=httpx.MockTransport(handler))

    monkeypatch.setattr(cli, "JobsClient", with_mock)
    return CliRunner().invoke(cli.app, [*args, "--url", URL, "--user", "demo", "--password", "demo"])


@pytest.mark.parametrize(
    ("answer", "code", "message"),
    [
        (orthanc_error(401, "refused"), 4, "the cluster refused these credentials (use --user/--password"),
        (orthanc_error(404, "unknown"), 1, f"error: no job {JOB}"),
        (orthanc_error(409, "gone"), 1, "error: gone"),
        (httpx.Response(502, text="<html>"), 3, "error: http://lb.test answered 502"),
    ],
)
def test_exit_codes(monkeypatch: pytest.MonkeyPatch, answer: httpx.Response, code: int, message: str) -> None:
    result = run(monkeypatch, lambda request: answer, "show", JOB)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_usage_errors_are_exit_code_2(monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(monkeypatch, lambda request: sse(""), "list", "--limit", "-1").exit_code == 2
    assert CliRunner().invoke(cli.app, ["list", "--url", "ftp://x"]).exit_code == 2
    assert CliRunner().invoke(cli.app, ["list", "--password", "p"]).exit_code == 2


@pytest.mark.parametrize(("orthanc_path", "path"), [(None, "/orthanc/jobs"), ("", "/jobs"), ("/", "/jobs")])
def test_connection_options_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, orthanc_path: str | None, path: str
) -> None:
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), request.headers.get("authorization")))
        return httpx.Response(200, json=[], headers={"X-Total-Count": "0"})

    real = cli.JobsClient
    monkeypatch.setattr(
        cli, "JobsClient", lambda *a, **k: real(*a, **k, transport=httpx.MockTransport(handler))
    )
    monkeypatch.delenv("ORTHANC_JOBS_CLI_ORTHANC_PATH", raising=False)
    env = {
        "ORTHANC_JOBS_CLI_URL": "http://env.test",
        "ORTHANC_JOBS_CLI_USER": "u",
        "ORTHANC_JOBS_CLI_PASSWORD": "p",
    }
    if orthanc_path is not None:
        env["ORTHANC_JOBS_CLI_ORTHANC_PATH"] = orthanc_path
    result = CliRunner().invoke(cli.app, ["list"], env=env)
    assert result.exit_code == 0, result.output
    assert seen == [(f"http://env.test{path}?expand=&limit=50", "Basic dTpw")]
    assert "no jobs" in result.output

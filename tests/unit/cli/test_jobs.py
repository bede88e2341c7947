"""The API commands in-process: the four actions, which share one implementation."""

import httpx
import pytest

from tests.unit.cli.invoke import run
from tests.unit.client.fakes import JOB, job


@pytest.mark.parametrize("action", ["pause", "resume", "cancel", "resubmit"])
def test_each_action_posts_itself_and_prints_the_state(action: str) -> None:
    posted = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            posted.append(request.url.path)
            return httpx.Response(200, json={})
        return httpx.Response(200, json=job(JOB, "Success"))

    result = run(handler, action, JOB)
    assert result.exit_code == 0, result.output
    assert posted == [f"/orthanc/jobs/{JOB}/{action}"]
    assert result.output == f"job {JOB}: Success\n"


def test_list_sends_the_search_filters() -> None:
    asked: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return httpx.Response(200, json=[job(JOB, "Failure")], headers={"X-Total-Count": "1"})

    result = run(
        handler,
        "list",
        "--q",
        "ward 7",
        "--resource",
        "b9c08539-26f93bde-c81ab0d7-bffaf2cb-a4d0bdd0",
        "--id",
        JOB,
        "--created-since",
        "2025-01-01",
        "--created-until",
        "2025-01-31",
        "--completed-since",
        "20250101T000000",
        "--completed-until",
        "2025-02-01T00:00:00Z",
        "--status",
        "Failure",
    )
    assert result.exit_code == 0, result.output
    assert JOB in result.output and "jobs 1-1 of 1" in result.output
    assert asked[0].url.params.multi_items() == [
        ("expand", ""),
        ("status", "Failure"),
        ("ids", JOB),
        ("created-since", "2025-01-01"),
        ("created-until", "2025-01-31"),
        ("completed-since", "20250101T000000"),
        ("completed-until", "2025-02-01T00:00:00Z"),
        ("q", "ward 7"),
        ("resource", "b9c08539-26f93bde-c81ab0d7-bffaf2cb-a4d0bdd0"),
        ("limit", "50"),
    ]


@pytest.mark.parametrize("output", ["csv", "json"])
def test_list_prints_the_export_for_scripts(output: str) -> None:
    asked: list[httpx.Request] = []
    body = b'ID,Description\r\n1,"a, ""b""\nc"\r\n' if output == "csv" else b'[{"ID":"1"}]'

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return httpx.Response(200, content=body)

    result = run(handler, "list", "--format", output, "--status", "Failure")
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == body  # as the service wrote it, nothing added
    assert asked[0].url.path == "/orthanc-jobs/export"
    assert asked[0].url.params.multi_items() == [("format", output), ("status", "Failure")]  # every job


def test_list_refuses_what_it_cannot_read_as_a_usage_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing is asked")

    for arguments in (
        ["--created-since", "yesterday"],
        ["--resource", "1234"],
        ["--format", "csv", "--json"],
    ):
        result = run(handler, "list", *arguments)
        assert result.exit_code == 2, (arguments, result.output)
    assert "'yesterday' is not a time" in run(handler, "list", "--created-since", "yesterday").output
    assert run(handler, "list", "--format", "xml").exit_code == 2

"""The API commands in-process: the four actions, which share one implementation, on one job or on every
job filters match."""

import json
from collections.abc import Callable

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


def _actions_service(posted: list[dict], results: list[dict]) -> Callable[[httpx.Request], httpx.Response]:
    """POST /orthanc-jobs/actions and the run's progress, as the service answers them."""
    plan = {
        "Action": "resubmit",
        "Matching": 3,
        "Accepted": 2,
        "Refused": 1,
        "RefusedReasons": [{"Reason": "the job is Success", "Count": 1}],
        "RefusedJobs": [],
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/orthanc-jobs/actions"):
            body = json.loads(request.content)
            posted.append(body)
            if body["DryRun"]:
                return httpx.Response(200, json={**plan, "DryRun": True})
            return httpx.Response(202, json={**plan, "ID": "a1", "Path": "/orthanc-jobs/actions/a1"})
        if request.url.path.endswith("/orthanc-jobs/actions/a1"):
            done = sum(1 for result in results if result["Result"] == "done")
            state = {"State": "Done", "Total": 2, "Processed": 2, "Done": done, "Refused": 2 - done}
            return httpx.Response(200, json={**state, "Unreachable": 0, "Results": results})
        return httpx.Response(404)

    return handler


def test_an_action_on_many_jobs_counts_first_and_stops_at_a_dry_run() -> None:
    posted: list[dict] = []
    result = run(
        _actions_service(posted, []),
        "resubmit",
        "--status",
        "Failure",
        "--type",
        "DicomModalityStore",
        "--dry-run",
    )
    assert result.exit_code == 0, result.output
    assert posted == [
        {
            "Action": "resubmit",
            "Filter": {"status": ["Failure"], "type": ["DicomModalityStore"]},
            "DryRun": True,
        }
    ]
    assert "3 jobs match; 2 would be sent 'resubmit', 1 refused" in result.output
    assert "1 x the job is Success" in result.output


def test_an_action_on_many_jobs_runs_with_the_count_confirmed_and_reports_each_miss() -> None:
    posted: list[dict] = []
    results = [
        {"ID": JOB, "Result": "done", "HttpStatus": 200, "Reason": ""},
        {"ID": "other", "Result": "refused", "HttpStatus": 400, "Reason": "Bad sequence of calls"},
    ]
    result = run(_actions_service(posted, results), "resubmit", "--status", "Failure", "--yes")
    assert [body["DryRun"] for body in posted] == [True, False]
    assert posted[1]["Expected"] == 2  # what was counted is what is done
    assert result.exit_code == 1, result.output
    assert "resubmit: 1 done, 1 refused" in result.output and "Bad sequence of calls" in result.output
    assert "1 of 2 jobs were not sent 'resubmit'" in result.output


def test_without_a_terminal_a_run_needs_yes() -> None:
    posted: list[dict] = []
    result = run(_actions_service(posted, []), "cancel", "--status", "Running")
    assert result.exit_code == 2 and "confirm with --yes" in result.output
    assert [body["DryRun"] for body in posted] == [True]


def test_an_id_and_filters_do_not_go_together() -> None:
    result = run(_actions_service([], []), "cancel", JOB, "--status", "Running")
    assert result.exit_code == 2 and "not both" in result.output
    result = run(_actions_service([], []), "cancel")
    assert result.exit_code == 2 and "give a job's ID, or filters" in result.output


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

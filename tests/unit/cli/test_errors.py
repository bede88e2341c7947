"""The one place where a failure becomes one line on stderr and an exit code (the commands' exit codes,
without a cluster; tests/e2e/test_cli.py runs the command itself against a real cluster)."""

import httpx
import pytest

from tests.unit.cli.invoke import run
from tests.unit.client.fakes import JOB, orthanc_error


@pytest.mark.parametrize(
    ("answer", "code", "message"),
    [
        (orthanc_error(401, "refused"), 4, "the cluster refused these credentials (use --user/--password"),
        (orthanc_error(404, "unknown"), 1, f"error: no job {JOB}"),
        (orthanc_error(409, "gone"), 1, "error: gone"),
        (httpx.Response(502, text="<html>"), 3, "error: http://lb.test answered 502"),
    ],
)
def test_exit_codes(answer: httpx.Response, code: int, message: str) -> None:
    result = run(lambda request: answer, "show", JOB)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output

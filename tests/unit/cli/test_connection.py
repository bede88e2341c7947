"""The connection options of the API commands: checked, read from the environment, made into a client."""

import httpx
import pytest
from typer.testing import CliRunner

from orthanc_jobs import cli
from tests.unit.cli.invoke import run
from tests.unit.client.fakes import sse


def test_usage_errors_are_exit_code_2() -> None:
    assert run(lambda request: sse(""), "list", "--limit", "-1").exit_code == 2
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

    monkeypatch.delenv("ORTHANC_JOBS_CLI_ORTHANC_PATH", raising=False)
    env = {
        "ORTHANC_JOBS_CLI_URL": "http://env.test",
        "ORTHANC_JOBS_CLI_USER": "u",
        "ORTHANC_JOBS_CLI_PASSWORD": "p",
    }
    if orthanc_path is not None:
        env["ORTHANC_JOBS_CLI_ORTHANC_PATH"] = orthanc_path
    result = CliRunner().invoke(cli.app, ["list"], env=env, obj=httpx.MockTransport(handler))
    assert result.exit_code == 0, result.output
    assert seen == [(f"http://env.test{path}?expand=&limit=50", "Basic dTpw")]
    assert "no jobs" in result.output

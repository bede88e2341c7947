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

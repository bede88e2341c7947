"""Property-based fuzzing of the job-service's API from its own OpenAPI description: never a 5xx.

The public routes are fuzzed on the real cluster with the cluster's credentials (and without any); the
plugin's internal routes, with the shared secret, on a job-service of their own, since fuzzing them
registers made-up servers.
"""

import base64
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from orthanc_jobs import INTERNAL_PREFIX
from orthanc_jobs.cluster.launcher import DEMO_USER, ClusterState, free_port
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.e2e

SECRET = "fuzzing-secret"
BASIC = "Basic " + base64.b64encode(":".join(DEMO_USER).encode()).decode()


@pytest.fixture(scope="module")
def api_schema(cluster: ClusterState) -> schemathesis.schemas.BaseSchema:
    raw = httpx.get(f"{cluster.service_url}/orthanc-jobs/openapi.json", auth=DEMO_USER).json()
    return schemathesis.openapi.from_dict(raw)


@pytest.fixture(scope="module")
def lonely_service() -> Iterator[str]:
    """A job-service with no Orthanc at all, to fuzz the plugin's API."""
    port = free_port()
    env = {"ORTHANC_JOBS_SECRET": SECRET, "ORTHANC_JOBS_DATABASE": ":memory:", "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "orthanc_jobs", "serve", "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url), timeout=20, what="the job-service")
        yield url
    finally:
        process.terminate()
        process.wait(10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz").status_code == 200
    except httpx.HTTPError:
        return False


STREAM = "/orthanc-jobs/events"
NOT_SENT = 0


def _open_stream(base_url: str, case: schemathesis.Case, authorization: str) -> tuple[int, str]:
    """The event stream never ends: open it with the generated parameters, read the status, close."""
    headers = {key: str(value) for key, value in (case.headers or {}).items()}
    headers["Authorization"] = authorization
    query = {key: str(value) for key, value in (case.query or {}).items()}
    try:
        with httpx.stream("GET", base_url + STREAM, params=query, headers=headers, timeout=10) as answer:
            text = answer.read().decode()[:300] if answer.status_code >= 400 else ""
            return answer.status_code, text
    except httpx.LocalProtocolError:  # a header value httpx itself refuses to send: nothing was sent
        return NOT_SENT, ""


def fuzz_every_operation(
    api_schema: schemathesis.schemas.BaseSchema, check: Callable[[schemathesis.Case], None], examples: int
) -> int:
    """Run ``check`` on cases Hypothesis generates for each operation of the schema; returns how many."""
    seen = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case: schemathesis.Case) -> None:
            nonlocal seen
            seen += 1
            check(case)

        run()
    return seen


def test_no_route_answers_5xx(
    api_schema: schemathesis.schemas.BaseSchema, cluster: ClusterState, lonely_service: str
) -> None:
    statuses: Counter[int] = Counter()

    def check(case: schemathesis.Case) -> None:
        if case.path == STREAM:
            status, text = _open_stream(cluster.service_url, case, BASIC)
            if status == NOT_SENT:
                return
            statuses[status] += 1
            assert status < 500, (case.formatted_path, case.headers, case.query, status, text)
            return
        if case.path.startswith(INTERNAL_PREFIX):
            answer = case.call(base_url=lonely_service, headers={"Authorization": f"Bearer {SECRET}"})
        else:
            answer = case.call(base_url=cluster.service_url, headers={"Authorization": BASIC})
        statuses[answer.status_code] += 1
        assert answer.status_code < 500, (
            case.method,
            case.formatted_path,
            answer.status_code,
            answer.text[:300],
        )
        if answer.status_code >= 400:
            assert answer.json()["HttpStatus"] == answer.status_code

    requests = fuzz_every_operation(api_schema, check, examples=60)
    print(f"\nfuzzing: {requests} requests, answers by status: {dict(sorted(statuses.items()))}")
    assert requests > 200
    assert sum(count for status, count in statuses.items() if status >= 500) == 0


def test_no_route_answers_without_credentials(
    api_schema: schemathesis.schemas.BaseSchema, cluster: ClusterState
) -> None:
    def check(case: schemathesis.Case) -> None:
        if case.path == STREAM:
            assert _open_stream(cluster.service_url, case, "Basic ZGVtbzp3cm9uZw==")[0] in (401, NOT_SENT)
            return
        answer = case.call(base_url=cluster.service_url, headers={"Authorization": "Basic ZGVtbzp3cm9uZw=="})
        if case.path in ("/healthz", "/readyz", "/metrics"):  # for orchestrators: no credentials, no job data
            assert answer.status_code in (200, 503)
            assert "CreationTime" not in answer.text
            return
        expected = (401, 403) if case.path.startswith(INTERNAL_PREFIX) else (401,)
        assert answer.status_code in expected, (case.method, case.formatted_path, answer.status_code)

    assert fuzz_every_operation(api_schema, check, examples=10) > 20

"""``GET /orthanc-jobs/webhooks`` and the webhooks' settings, in process (the Orthanc servers played by
FakeOrthanc)."""

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from orthanc_jobs.api.app import build_services, create_app
from orthanc_jobs.api.fast import JobServiceApp
from orthanc_jobs.cli import app as cli_app
from orthanc_jobs.config import Settings
from orthanc_jobs.core.orthanc import OrthancClient
from orthanc_jobs.core.webhooks import WebhookConfigError
from tests.unit.api.conftest import SECRET, public
from tests.unit.fake_orthanc import FakeOrthanc

HOOK_SECRET = "a-long-enough-webhook-secret"
WEBHOOKS = [
    {"Name": "ops", "Url": "https://bot:pa55word@alerts.example/hook", "Secret": HOOK_SECRET},
    {
        "Name": "stores",
        "Url": "http://127.0.0.1:9/hook",
        "Secret": HOOK_SECRET,
        "Events": ["job-failure"],
        "Types": ["DicomModalityStore"],
        "Servers": ["orthanc-1"],
    },
]


@pytest.fixture
def service_app(orthanc: FakeOrthanc) -> JobServiceApp:
    """The conftest's service (``service``), with webhooks."""
    settings = Settings(secret=SECRET, database=":memory:", webhooks=orjson.dumps(WEBHOOKS).decode())
    services = build_services(
        settings, client=OrthancClient(5, transport=httpx.MockTransport(orthanc.handler))
    )
    return create_app(services=services)


async def test_the_route_lists_the_webhooks_without_their_secrets_under_the_cluster_credentials(
    service: httpx.AsyncClient, service_app: JobServiceApp
) -> None:
    assert (await service.get("/orthanc-jobs/webhooks")).status_code == 401
    answer = await service.get("/orthanc-jobs/webhooks", headers=public())
    assert answer.status_code == 200
    assert HOOK_SECRET not in answer.text and "pa55word" not in answer.text
    ops, stores = answer.json()
    assert ops == {
        "Name": "ops",
        "Url": "https://alerts.example/hook",
        "Events": ["job-failure", "job-stuck", "server-not-responding", "server-stopped"],
        "Types": None,
        "Servers": None,
        "Delivered": 0,
        "Failed": 0,
        "AttemptFailures": 0,
        "Queued": 0,
        "LastDeliveredAt": None,
        "LastFailureAt": None,
        "LastError": None,
    }
    assert (stores["Events"], stores["Types"], stores["Servers"]) == (
        ["job-failure"],
        ["DicomModalityStore"],
        ["orthanc-1"],
    )
    assert HOOK_SECRET not in repr(service_app.state.services.settings)
    await service_app.state.services.webhooks.stop()


def test_a_bad_webhook_stops_the_start_with_its_name() -> None:
    bad = orjson.dumps([{**WEBHOOKS[0], "Secret": "short"}]).decode()
    with pytest.raises(WebhookConfigError, match="webhook 1 \\('ops'\\): Secret is too short"):
        build_services(Settings(secret=SECRET, database=":memory:", webhooks=bad))
    result = CliRunner().invoke(
        cli_app, ["serve"], env={"ORTHANC_JOBS_SECRET": SECRET, "ORTHANC_JOBS_WEBHOOKS": bad}
    )
    assert result.exit_code == 2
    assert "webhooks: ORTHANC_JOBS_WEBHOOKS, webhook 1 ('ops'): Secret is too short" in result.output
    assert "short" not in result.output.replace("too short", "")

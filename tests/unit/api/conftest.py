"""The job-service in process, with its Orthanc servers played by an httpx mock transport (FakeOrthanc)."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn

from orthanc_jobs.api.app import build_services, create_app
from orthanc_jobs.api.fast import JobServiceApp
from orthanc_jobs.config import Settings
from orthanc_jobs.core.model import plugin_secret_for
from orthanc_jobs.core.orthanc import OrthancClient
from tests.unit.fake_orthanc import GOOD, FakeOrthanc

SECRET = "unit-test-secret"
URL1 = "http://127.0.0.1:8001"


def plugin(url: str = URL1, secret_of: str | None = None) -> dict[str, str]:
    """The headers of the plugin of the server at ``url``: it names its server, with that server's secret
    (or the secret of ``secret_of``, to forge)."""
    return {
        "Authorization": f"Bearer {plugin_secret_for(SECRET, secret_of or url)}",
        "X-Orthanc-Jobs-Server": url,
    }


@pytest.fixture
def orthanc() -> FakeOrthanc:
    fake = FakeOrthanc()
    for port in (8001, 8002):
        fake.add_server(f"http://127.0.0.1:{port}")
    return fake


@pytest.fixture
def service_app(orthanc: FakeOrthanc) -> JobServiceApp:
    settings = Settings(secret=SECRET, max_body_bytes=4096, database=":memory:")
    services = build_services(
        settings, client=OrthancClient(5, transport=httpx.MockTransport(orthanc.handler))
    )
    return create_app(services=services)


@pytest.fixture
async def service(orthanc: FakeOrthanc, service_app: JobServiceApp) -> AsyncIterator[httpx.AsyncClient]:
    app = service_app
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as client:
        for number, url in enumerate(orthanc.jobs, start=1):
            body = {
                "Name": f"orthanc-{number}",
                "Url": url,
                "Incarnation": f"inc-{number}",
                "Token": "Bearer token",
            }
            assert (
                await client.post("/orthanc-jobs/internal/register", json=body, headers=plugin(url))
            ).status_code == 200
        yield client


def public(**headers: str) -> dict[str, str]:
    return {"Authorization": GOOD, **headers}


async def start_uvicorn(
    app: Any, options: dict[str, Any], server_class: type[uvicorn.Server] = uvicorn.Server, **extra: Any
) -> tuple[uvicorn.Server, "asyncio.Future[None]", int]:
    """A real uvicorn server for ``app`` on a free loopback port: the server, its task, and the port."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", **options)
    server = server_class(config, **extra)
    serving = asyncio.ensure_future(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    return server, serving, server.servers[0].sockets[0].getsockname()[1]


@asynccontextmanager
async def uvicorn_serving(app: Any, options: dict[str, Any]) -> AsyncIterator[int]:
    """``start_uvicorn`` for the duration of a block: the port."""
    server, serving, port = await start_uvicorn(app, options)
    try:
        yield port
    finally:
        server.should_exit = True
        await serving

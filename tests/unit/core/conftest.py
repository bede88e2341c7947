"""Two Orthanc servers played by FakeOrthanc, and a registry in memory that knows them."""

import pytest

from orthanc_jobs.core.registry import Registry
from tests.unit.fake_orthanc import FakeOrthanc, registry_of

URLS = ["http://127.0.0.1:8001", "http://127.0.0.1:8002"]


@pytest.fixture
def orthanc() -> FakeOrthanc:
    fake = FakeOrthanc()
    for url in URLS:
        fake.add_server(url)
    return fake


@pytest.fixture
def registry() -> Registry:
    return registry_of(URLS)

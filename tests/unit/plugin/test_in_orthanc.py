"""The plugin loaded as Orthanc loads it (a stand-in ``orthanc`` module), and outside Orthanc."""

import json
import sys
import uuid

import pytest

from orthanc_jobs.cluster.ports import free_port
from tests.unit.plugin.stubs import (
    JOB_SUBMITTED,
    JOB_SUCCESS,
    ORTHANC_STOPPED,
    ORTHANC_VERSION,
    PLUGIN_PATH,
    SECRET,
    OrthancHttp,
    load_plugin,
    plugin,
    wait_until,
)


@pytest.fixture
def clock():
    """The real clock, which the plugin started as Orthanc starts it uses: for the stand-ins."""
    return plugin.SystemClock()


def test_importing_outside_orthanc_starts_nothing():
    module = load_plugin("orthanc_jobs_reporter_plain_import")
    assert module._reporter is None
    module.on_change(JOB_SUBMITTED, 0, "job-1")  # a no-op, not an error
    module.on_change(ORTHANC_STOPPED, 4, "")


class FakeOrthanc:
    """The ``orthanc`` module as the Python plugin gives it; its REST API is a real HTTP server (the plugin
    reads jobs over HTTP with its token), and its in-process reads are recorded as the faults they are."""

    def __init__(self, configuration: dict, jobs: dict[str, dict] | None = None):
        self.configuration = configuration
        self.callbacks: list = []
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.in_process_reads: list[str] = []
        self.http = OrthancHttp(jobs, token="Bearer generated-token")
        self.http_port = self.http.port

    def close(self):
        self.http.close()

    def GetConfiguration(self):
        return json.dumps(self.configuration)

    def RestApiGet(self, uri):
        # Orthanc 1.10.1 and 1.12.7 abort on some in-process reads (a job whose progress is NaN).
        self.in_process_reads.append(uri)
        raise RuntimeError("in-process REST read")

    def GenerateRestApiAuthorizationToken(self):
        return "Bearer generated-token"

    def RegisterOnChangeCallback(self, callback):
        self.callbacks.append(callback)

    def LogError(self, message):
        self.errors.append(message)

    def LogWarning(self, message):
        self.warnings.append(message)


def test_inside_orthanc_without_a_secret_the_reporter_is_off(clean_env):
    fake = FakeOrthanc({"PythonScript": str(PLUGIN_PATH)})
    clean_env.setitem(sys.modules, "orthanc", fake)

    module = load_plugin("orthanc_jobs_reporter_in_orthanc_no_secret")
    fake.close()

    assert module._reporter is None
    assert fake.callbacks == []
    assert any("no secret" in message for message in fake.errors)


def test_inside_orthanc_as_the_python_script_it_registers_and_reports(servers, clean_env):
    stub = servers.stub()
    job = {"ID": "job-here", "State": "Success", "Type": "Archive"}
    fake = FakeOrthanc({}, jobs={"job-here": job})
    fake.configuration = {
        "Name": "orthanc-b",
        "HttpPort": fake.http_port,
        "PythonScript": str(PLUGIN_PATH),
        "OrthancJobs": {"Url": stub.url, "Secret": SECRET, "HeartbeatInterval": 0.05, "Timeout": 0.5},
    }
    clean_env.setitem(sys.modules, "orthanc", fake)

    module = load_plugin("orthanc_jobs_reporter_in_orthanc")
    reporter = module._reporter
    try:
        assert reporter is not None
        assert fake.callbacks == [reporter.on_change]
        assert wait_until(lambda: stub.received("/register"))
        identity = stub.received("/register")[0].body
        assert identity["Name"] == "orthanc-b"
        assert identity["Url"] == f"http://127.0.0.1:{fake.http_port}"
        assert identity["Token"] == "Bearer generated-token"
        assert identity["OrthancVersion"] == ORTHANC_VERSION
        uuid.UUID(identity["Incarnation"])

        module.on_change(JOB_SUCCESS, 0, "job-gone")  # Orthanc answers 404: sent without the job JSON
        module.on_change(JOB_SUCCESS, 0, "job-here")
        assert wait_until(lambda: len(stub.delivered()) >= 2)
        assert stub.delivered() == [
            {"Type": "JOB_SUCCESS", "JobId": "job-gone"},
            {"Type": "JOB_SUCCESS", "JobId": "job-here", "Job": job},
        ]
        # Read over HTTP with the plugin's own token, never in-process.
        assert ("/jobs/job-here", "Bearer generated-token") in fake.http.reads
        assert fake.in_process_reads == []
    finally:
        if reporter is not None:
            reporter.stop(budget=0.2)
        fake.close()


def test_inside_orthanc_the_url_may_list_replicas(servers, clean_env):
    stub = servers.stub()
    fake = FakeOrthanc({})
    down = f"http://127.0.0.1:{free_port()}"
    fake.configuration = {
        "HttpPort": fake.http_port,
        "PythonScript": str(PLUGIN_PATH),
        "OrthancJobs": {"Url": [down, "jobs:8050", stub.url], "Secret": SECRET, "Timeout": 0.5},
    }
    clean_env.setitem(sys.modules, "orthanc", fake)

    module = load_plugin("orthanc_jobs_reporter_in_orthanc_replicas")
    reporter = module._reporter
    try:
        assert reporter is not None
        assert wait_until(lambda: stub.received("/register", 200))
        assert any("ignored" in message and "jobs:8050" in message for message in fake.errors)
        assert wait_until(lambda: f"registered with the job-service at {stub.url}" in str(fake.warnings))
    finally:
        if reporter is not None:
            reporter.stop(budget=0.2)
        fake.close()

"""The reporter imported by a user's own Python script, which keeps its own change callback."""

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from orthanc_jobs.cluster.launcher import DEMO_USER, REPORTER_PATH, ClusterState
from tests.e2e.conftest import orthanc_root, start_cluster, stop_cluster
from tests.e2e.helpers import create_async_job, create_study, wait_for

pytestmark = pytest.mark.e2e

USER_SCRIPT = """
import json
import orthanc
import orthanc_jobs_reporter

changes = []

def on_change(change_type, level, resource_id):
    orthanc_jobs_reporter.on_change(change_type, level, resource_id)
    changes.append(change_type)

def count_changes(output, uri, **request):
    output.AnswerBuffer(json.dumps({"Changes": len(changes)}), "application/json")

orthanc.RegisterOnChangeCallback(on_change)
orthanc.RegisterRestCallback("/user-script/changes", count_changes)
"""


@pytest.fixture(scope="module")
def user_cluster(orthanc_version: str) -> Iterator[ClusterState]:
    scripts = Path(tempfile.mkdtemp(prefix="orthanc-jobs-user-script-"))
    scripts.chmod(0o755)
    (scripts / "user_script.py").write_text(USER_SCRIPT)
    shutil.copy(REPORTER_PATH, scripts / "orthanc_jobs_reporter.py")
    directory = Path(tempfile.mkdtemp(prefix="orthanc-jobs-e2e-user-"))
    # Without polls nor resynchronisations, only the plugin's events can tell the service about a job.
    state = start_cluster(
        directory,
        1,
        {"PythonScript": f'"{scripts / "user_script.py"}"'},
        service_settings={"poll_interval": "3600", "resync_interval": "3600"},
        orthanc_root=orthanc_root(orthanc_version),
    )
    try:
        yield state
    finally:
        stop_cluster(directory)
        shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(scripts, ignore_errors=True)


def test_events_flow_through_the_users_callback(user_cluster: ClusterState) -> None:
    def resynchronised() -> bool:
        servers = httpx.get(f"{user_cluster.lb_url}/orthanc-jobs/servers", auth=DEMO_USER).json()
        return all(s["LastResync"] for s in servers)

    # The one resynchronisation after registration is over: from now on only events bring jobs.
    wait_for(resynchronised, timeout=10, what="the first resynchronisation")
    with httpx.Client(base_url=f"{user_cluster.lb_url}/orthanc-1", auth=DEMO_USER, timeout=30) as direct:
        study, _ = create_study(direct, "USERSCRIPT")
        job_id = create_async_job(direct, "archive", study)
        assert direct.get("/user-script/changes").json()["Changes"] > 0  # the user's own callback runs
    with httpx.Client(base_url=user_cluster.orthanc_lb_url, auth=DEMO_USER, timeout=30) as lb:
        # Listing never asks the servers: the job is there only because the reporter sent its events.
        wait_for(
            lambda: job_id in lb.get("/jobs", params={"status": "Success"}).json(), timeout=10, what="event"
        )
        servers = httpx.get(f"{user_cluster.lb_url}/orthanc-jobs/servers", auth=DEMO_USER).json()
        assert [s["Status"] for s in servers] == ["alive"]

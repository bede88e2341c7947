"""Nothing lost, on the real cluster with Orthanc's default history (JobsHistorySize 10).

- Jobs created while the job-service is dead (kill -9) are all listed once it is back, with their end state,
  although each Orthanc forgot most of them meanwhile: the plugin read each job when its event happened.
- A plugin whose queue is full says so: the gap is on /orthanc-jobs/servers, in the metrics and in the logs.
- One event the job-service cannot use is refused alone, with a reason; the others of its batch apply.
- A damaged or emptied history file is moved aside, loudly, and the service starts and rebuilds.
"""

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orthanc_jobs.cluster.launcher import DEMO_USER, ClusterState
from tests.e2e.conftest import running_cluster
from tests.e2e.helpers import (
    cli,
    create_async_job,
    create_study,
    direct,
    listed_states,
    pid_of,
    plugin_headers,
    wait_all_listed,
    wait_for,
    wait_job_state,
)

pytestmark = pytest.mark.e2e

# Orthanc's defaults for the history (10 finished jobs) and the archives; each plugin keeps at most 150
# events while the job-service is unreachable.
QUEUE_SIZE = 150
NO_LOSS_CONFIG = {"OrthancJobs": json.dumps({"QueueSize": QUEUE_SIZE})}


@pytest.fixture(scope="module")
def cluster(orthanc_version: str) -> Iterator[ClusterState]:
    with running_cluster("no-loss", orthanc_version, NO_LOSS_CONFIG, {"poll_interval": "0.5"}) as state:
        yield state


@pytest.fixture(scope="module")
def lb(cluster: ClusterState) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cluster.orthanc_lb_url, auth=DEMO_USER, timeout=30) as client:
        yield client


def servers(lb: httpx.Client) -> dict[str, dict[str, Any]]:
    return {server["Name"]: server for server in lb.get("/../orthanc-jobs/servers").json()}


def service_log(cluster: ClusterState) -> str:
    return (Path(cluster.directory) / "logs" / "job-service.log").read_text(errors="replace")


def test_jobs_created_while_the_job_service_is_killed_are_all_listed(
    cluster: ClusterState, lb: httpx.Client
) -> None:
    """kill -9 of the job-service while 200 archive jobs are created through the load balancer, back 8 s
    later. Before the fix, the 45 jobs created in the 1.4 s after the kill were lost for good."""
    study, _ = create_study(lb, "OUTAGE")
    created: list[str] = []

    def create() -> None:
        with httpx.Client(base_url=cluster.orthanc_lb_url, auth=DEMO_USER, timeout=30) as client:
            for _ in range(200):
                created.append(create_async_job(client, "archive", study))

    creator = threading.Thread(target=create)
    creator.start()
    wait_for(lambda: len(created) >= 20, what="the first jobs")
    os.kill(pid_of(cluster, "job-service"), signal.SIGKILL)
    killed_at = time.monotonic()
    after_kill_started = len(created)
    creator.join(120)
    after_kill = len(created)
    assert after_kill == 200
    time.sleep(max(0.0, killed_at + 8 - time.monotonic()))
    cli(cluster, "start", "job-service")

    ids = set(created)
    states = wait_all_listed(lb, ids)
    assert set(states.values()) == {"Success"}
    # Each Orthanc keeps its last 10: most of these jobs exist only in the job-service now.
    held = 0
    for name in cluster.orthanc_urls:
        with direct(cluster, name) as client:
            held += len(ids & set(client.get("/jobs").json()))
    assert held <= 30
    assert all(server["Gap"] is None for server in servers(lb).values())
    for job_id in created[after_kill_started:][:10]:  # jobs made while the service was dead, as Orthanc wrote
        job = lb.get(f"/jobs/{job_id}").json()
        assert (job["ID"], job["Type"], job["State"], job["Progress"]) == (job_id, "Archive", "Success", 100)
        assert job["Content"]["InstancesCount"] == 1


def test_a_full_plugin_queue_shows_its_gap(cluster: ClusterState, lb: httpx.Client) -> None:
    """The job-service away while one server makes more jobs than its plugin may keep: what was dropped is
    counted, logged as an error on both sides, and shown, never silent."""
    with direct(cluster, "orthanc-1") as client:
        study, _ = create_study(client, "GAP")
        cli(cluster, "stop", "job-service")
        try:
            created = [create_async_job(client, "archive", study) for _ in range(QUEUE_SIZE + 50)]
        finally:
            cli(cluster, "start", "job-service")

    gap = wait_for(lambda: servers(lb)["orthanc-1"]["Gap"], timeout=15, what="the gap reported")
    assert gap["DroppedEvents"] >= 50
    assert gap["From"] <= gap["To"]
    # Every job is either listed, with its end state, or counted in the gap (once the queued events,
    # which follow the first heartbeat, are in).
    listed = wait_for(
        lambda: (
            found
            if len(found := listed_states(lb, set(created))) + gap["DroppedEvents"] >= len(created)
            else None
        ),
        timeout=15,
        what="every job listed or counted",
    )
    assert set(listed.values()) == {"Success"}
    assert all(servers(lb)[name]["Gap"] is None for name in ("orthanc-2", "orthanc-3"))
    assert "dropped" in (Path(cluster.directory) / "logs" / "orthanc-1.log").read_text(errors="replace")
    assert wait_for(lambda: "orthanc-1" in service_log(cluster) and "job event(s)" in service_log(cluster))
    metrics = httpx.get(f"{cluster.service_url}/metrics").text
    assert (
        f'orthanc_jobs_plugin_dropped_events{{server="orthanc-1",what="event"}} {gap["DroppedEvents"]}.0'
        in metrics
    )


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"Deeper": value}
    return value


def test_one_bad_event_does_not_hold_back_the_others(cluster: ClusterState, lb: httpx.Client) -> None:
    """Job content nested 254 levels deep: before the fix, its batch answered 500 and the plugin sent it
    again for ever, holding back every later event of its server."""
    incarnation = servers(lb)["orthanc-2"]["Incarnation"]
    with direct(cluster, "orthanc-2") as client:
        study, _ = create_study(client, "BADEVENT")
        real = create_async_job(client, "archive", study)
        template = wait_job_state(client, real, {"Success"})
    deep, fine = str(uuid.uuid4()), str(uuid.uuid4())
    batch = {
        "Incarnation": incarnation,
        "Events": [
            {"Type": "JOB_SUCCESS", "JobId": deep, "Job": dict(template, ID=deep, Content=nested(254))},
            {"Type": "JOB_SUCCESS", "JobId": fine, "Job": dict(template, ID=fine)},
        ],
    }
    internal = f"{cluster.service_url}/orthanc-jobs/internal/events"
    plugin = plugin_headers(cluster, "orthanc-2")

    answer = httpx.post(internal, json=batch, headers=plugin, timeout=30)

    assert answer.status_code == 200, answer.text
    assert answer.json()["Accepted"] == 1
    [refused] = answer.json()["Refused"]
    assert (refused["Index"], refused["JobId"]) == (0, deep)
    assert "cannot be stored" in refused["Reason"]
    assert lb.get(f"/jobs/{fine}").json()["State"] == "Success"
    # The event itself was still used: the job is known, with its outcome.
    assert lb.get(f"/jobs/{deep}").json()["State"] == "Success"
    # Deeper than any JSON parser here accepts: the batch is refused whole, as a bad request (the plugin
    # then splits it), never a 5xx.
    job = json.dumps(dict(template, ID=deep, Content="CONTENT"))
    job = job.replace('"CONTENT"', '{"Deeper": ' * 3000 + '"bottom"' + "}" * 3000)  # no encoder goes so deep
    body = json.dumps(dict(batch, Events=[{"Type": "JOB_SUCCESS", "JobId": deep, "Job": "JOB"}]))
    answer = httpx.post(internal, content=body.replace('"JOB"', job), headers=plugin, timeout=30)
    assert answer.status_code == 400, answer.text
    assert "Traceback" not in service_log(cluster)

    # The server's own events still flow.
    with direct(cluster, "orthanc-2") as client:
        after = create_async_job(client, "archive", study)
    assert wait_job_state(lb, after, {"Success"})["Server"]["Name"] == "orthanc-2"


def damage(path: Path, how: str) -> None:
    if how == "emptied":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(os.urandom(64 * 1024))
    else:  # cut in the middle of its pages
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2 + 100])


@pytest.mark.parametrize("how", ["emptied", "garbage", "truncated"])
def test_a_damaged_history_file_is_moved_aside_and_rebuilt(
    cluster: ClusterState, lb: httpx.Client, how: str
) -> None:
    """Before the fix, an emptied file was taken as it was (30 jobs of 391 reported, no warning), and other
    damage kept the service from starting (every job route answered 502)."""
    with direct(cluster, "orthanc-3") as client:
        study, _ = create_study(client, f"DAMAGE{how.upper()}")
        recent = [create_async_job(client, "archive", study) for _ in range(3)]
    for job_id in recent:
        wait_job_state(lb, job_id, {"Success"})
    database = Path(cluster.directory) / "job-service.sqlite3"
    cli(cluster, "stop", "job-service")
    assert database.stat().st_size > 0
    damage(database, how)
    log_before = len(service_log(cluster))

    cli(cluster, "start", "job-service")

    # Credentials are checked against a live Orthanc: none is known until the plugins register again (503
    # meanwhile, within a heartbeat).
    about = wait_for(lambda: (answer := lb.get("/../orthanc-jobs/")).status_code == 200 and answer.json())
    aside = Path(about["HistoryMovedAside"])
    assert aside.parent == database.parent and aside.name.startswith("job-service.sqlite3.damaged-")
    assert aside.exists()
    log = service_log(cluster)[log_before:]
    assert "ERROR" in log and "cannot be used" in log and str(aside) in log
    assert "orthanc_jobs_history_moved_aside 1.0" in httpx.get(f"{cluster.service_url}/metrics").text
    # Rebuilt from what the servers still hold: they register again, and their jobs are read back.
    wait_for(
        lambda: [s["Status"] for s in servers(lb).values()] == ["alive"] * 3, timeout=15, what="servers back"
    )
    held: set[str] = set()
    for name in cluster.orthanc_urls:
        with direct(cluster, name) as client:
            held |= set(client.get("/jobs").json())
    assert set(recent) <= held
    wait_for(lambda: held <= set(lb.get("/jobs").json()), timeout=15, what="the servers' jobs listed again")

"""The night a PACS administrator fears (issue #15): the transfers of a night to a modality that does not
answer all fail; the morning after, with the modality back, one action resubmits them all and they succeed.

300 ``DicomModalityStore`` jobs through the load balancer (spread over the cluster's servers) to a modality
where nothing listens; they fail. The administrator counts them with a dry run of the command line, the PACS
comes back on its port, and ``orthanc-jobs resubmit --status Failure --type DicomModalityStore --yes``
resubmits every one on its own server; all 300 end in Success and the PACS holds the instance.

The operator's alert receiver, a webhook, gets a signed ``job-failure`` for each of the 300, and nothing for
their success.

The PACS is a lone Orthanc whose DICOM server listens on every interface: this module runs in a network of
its own (tests/e2e/test_own_network.py).
"""

import subprocess
import sys
from collections.abc import Iterator

import httpx
import orjson
import pytest

from orthanc_jobs.cluster.demo import create_study
from orthanc_jobs.cluster.launcher import DEMO_USER, ClusterState, free_port
from tests.e2e.conftest import ORTHANC_CONFIG, orthanc_root, running_cluster
from tests.e2e.helpers import wait_for
from tests.e2e.pacs import PACS_AET, Pacs
from tests.e2e.receiver import Receiver

pytestmark = pytest.mark.e2e

NIGHT = 300
STORE = "DicomModalityStore"


SECRET = "night-shift-webhook-secret"


@pytest.fixture(scope="module")
def receiver(orthanc_version: str) -> Iterator[Receiver]:
    """The operator's alert receiver (a chat bot, an incident tool), told of failed transfers only."""
    found = Receiver(SECRET)
    yield found
    found.close()


@pytest.fixture(scope="module")
def night_cluster(orthanc_version: str, receiver: Receiver) -> Iterator[ClusterState]:
    webhooks = [
        {
            "Name": "on-call",
            "Url": f"{receiver.url}/on-call",
            "Secret": SECRET,
            "Types": [STORE],
            "Events": ["job-failure"],
        }
    ]
    settings = {"webhooks": orjson.dumps(webhooks).decode()}
    config = {**ORTHANC_CONFIG, "ConcurrentJobs": "2"}
    with running_cluster("night", orthanc_version, config, settings) as state:
        yield state


def _total(lb: httpx.Client, **filters: str) -> int:
    answer = lb.get("/jobs", params={**filters, "limit": 0})
    assert answer.status_code == 200, answer.text
    return int(answer.headers["x-total-count"])


def _command(cluster: ClusterState, *args: str) -> subprocess.CompletedProcess[str]:
    user, password = DEMO_USER
    command = [sys.executable, "-m", "orthanc_jobs", *args]
    command += ["--url", cluster.lb_url, "--user", user, "--password", password]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def test_a_night_of_failed_transfers_is_resubmitted_with_one_action(
    night_cluster: ClusterState, orthanc_version: str, receiver: Receiver
) -> None:
    pacs_port = free_port()
    with httpx.Client(base_url=night_cluster.orthanc_lb_url, auth=DEMO_USER, timeout=60) as lb:
        _, [instance] = create_study(lb, "NIGHT")
        modality = {"AET": PACS_AET, "Host": "127.0.0.1", "Port": pacs_port}
        assert lb.put("/modalities/night-pacs", json=modality).status_code == 200
        jobs = set()
        for _ in range(NIGHT):
            answer = lb.post(
                "/modalities/night-pacs/store", json={"Resources": [instance], "Asynchronous": True}
            )
            assert answer.status_code == 200, answer.text
            jobs.add(answer.json()["ID"])
        assert len(jobs) == NIGHT
        # Spread over the servers, as the load balancer sent them.
        owners = {
            job["Server"]["Name"] for job in lb.get("/jobs", params={"expand": "", "type": STORE}).json()
        }
        assert len(owners) == len(night_cluster.orthanc_urls)
        wait_for(lambda: _total(lb, status="Failure", type=STORE) == NIGHT, 120, 0.5, "300 failed transfers")
        # The on-call receiver was told of each failure, signed, with the job as the API answers it.
        alerted = wait_for(
            lambda: (found := receiver.alerts("/on-call")) and len(found) >= NIGHT and found,
            60,
            0.5,
            "alerts",
        )
        assert {alert["Job"]["ID"] for alert in alerted} == jobs and len(alerted) == NIGHT
        assert {alert["Event"] for alert in alerted} == {"job-failure"}
        assert {(alert["Job"]["Type"], alert["Job"]["State"]) for alert in alerted} == {(STORE, "Failure")}

        # The morning after: how many, and would any be refused?
        counted = _command(night_cluster, "resubmit", "--status", "Failure", "--type", STORE, "--dry-run")
        assert counted.returncode == 0, counted.stdout + counted.stderr
        assert f"{NIGHT} jobs match; {NIGHT} would be sent 'resubmit'." in counted.stdout
        assert _total(lb, status="Failure", type=STORE) == NIGHT  # a dry run changes nothing

        pacs = Pacs(orthanc_root(orthanc_version), night_cluster, studies=0, dicom_port=pacs_port)
        try:
            resubmitted = _command(night_cluster, "resubmit", "--status", "Failure", "--type", STORE, "--yes")
            assert resubmitted.returncode == 0, resubmitted.stdout + resubmitted.stderr
            assert f"resubmit: {NIGHT} done, 0 refused, 0 owner unreachable (done)" in resubmitted.stdout
            wait_for(
                lambda: _total(lb, status="Success", type=STORE) == NIGHT, 180, 0.5, "300 transfers done"
            )
            listed = lb.get("/jobs", params={"expand": "", "type": STORE}).json()
            assert {job["ID"] for job in listed} == jobs and {job["State"] for job in listed} == {"Success"}
            assert pacs.client.get(f"/instances/{instance}").status_code == 200
        finally:
            pacs.close()

        # Nothing left to resubmit: the command says so and changes nothing.
        again = _command(night_cluster, "resubmit", "--status", "Failure", "--type", STORE, "--yes")
        assert again.returncode == 1 and "no job to resubmit" in again.stdout + again.stderr

    service = httpx.get(f"{night_cluster.service_url}/metrics", timeout=10).text
    finished = {
        state: sum(
            float(line.rsplit(" ", 1)[1])
            for line in service.splitlines()
            if line.startswith("orthanc_jobs_finished_total{")
            and f'state="{state}"' in line
            and STORE in line
        )
        for state in ("Failure", "Success")
    }
    assert finished == {"Failure": NIGHT, "Success": NIGHT}
    assert len(receiver.alerts("/on-call")) == NIGHT  # the successes alerted nobody

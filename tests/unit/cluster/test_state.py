"""cluster.json: what is saved is loaded back, and a file from before replicas still loads."""

import json
from pathlib import Path

import pytest

from orthanc_jobs.cluster import ClusterError
from orthanc_jobs.cluster.processes import OwnedProcess
from orthanc_jobs.cluster.state import STATE_FILE, ClusterState

REPLICAS = {"job-service-1": "http://127.0.0.1:8051", "job-service-2": "http://127.0.0.1:8052"}


def _process(name: str) -> OwnedProcess:
    return OwnedProcess("job-service", name, 4321, "python", f"/logs/{name}.log")


def test_the_replicas_are_saved_and_loaded_back_in_order(tmp_path: Path) -> None:
    state = ClusterState(
        directory=str(tmp_path),
        lb_url="http://127.0.0.1:8042",
        service_url=REPLICAS["job-service-1"],
        orthanc_urls={"orthanc-1": "http://127.0.0.1:9001"},
        secret="s",
        processes=[_process(name) for name in REPLICAS],
        service_urls=dict(REPLICAS),
    )
    state.save()

    loaded = ClusterState.load(tmp_path)

    assert loaded == state
    assert list(loaded.service_urls.items()) == list(REPLICAS.items())
    assert loaded.service_url == "http://127.0.0.1:8051"


def test_a_state_from_before_replicas_has_its_one_job_service(tmp_path: Path) -> None:
    old = {
        "directory": str(tmp_path),
        "lb_url": "http://127.0.0.1:8042",
        "service_url": "http://127.0.0.1:8050",
        "orthanc_urls": {},
        "secret": "s",
        "processes": [_process("job-service").to_json()],
    }
    (tmp_path / STATE_FILE).write_text(json.dumps(old))

    loaded = ClusterState.load(tmp_path)

    assert loaded.service_urls == {"job-service": "http://127.0.0.1:8050"}
    assert loaded.find_process("job-service").name == "job-service"


def test_a_wrong_process_name_lists_the_valid_ones(tmp_path: Path) -> None:
    state = ClusterState(
        str(tmp_path), "", REPLICAS["job-service-1"], {}, "s", [_process(n) for n in REPLICAS]
    )

    with pytest.raises(ClusterError, match=r"job-service-3.*there are: job-service-1, job-service-2"):
        state.find_process("job-service-3")

"""The demo: sample studies and jobs, created through the load balancer like any client would, on a cluster
whose job-service runs as replicas."""

from collections import Counter
from itertools import cycle
from typing import Any

import httpx

from orthanc_jobs.cluster.config import DEMO_USER
from orthanc_jobs.cluster.state import ClusterState

#: The demo shows the job-service's replicas at work: two, on the cluster's PostgreSQL.
SERVICE_REPLICAS = 2

# Secondary Capture: instances Orthanc can also send by C-STORE.
SOP_CLASS_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def create_instance(client: httpx.Client, tags: dict[str, str], parent: str | None = None) -> dict[str, Any]:
    """One DICOM instance made by Orthanc itself (/tools/create-dicom), no file needed."""
    body: dict[str, Any] = {"Tags": {"SOPClassUID": SOP_CLASS_SECONDARY_CAPTURE, **tags}}
    if parent is None:
        body["Tags"].setdefault("Modality", "OT")
    else:  # the series-level tags are inherited from the parent
        body["Parent"] = parent
    answer = client.post("/tools/create-dicom", json=body)
    answer.raise_for_status()
    return dict(answer.json())


def create_study(client: httpx.Client, label: str, instances: int = 1) -> tuple[str, list[str]]:
    """A study of ``instances`` instances in one series; returns the study's id and the instances' ids."""
    tags = {"PatientName": f"DEMO^{label}", "PatientID": label, "StudyDescription": f"Study {label}"}
    first = create_instance(client, tags)
    created = [first["ID"]]
    for _ in range(instances - 1):
        created.append(create_instance(client, {}, parent=first["ParentSeries"])["ID"])
    return str(first["ParentStudy"]), created


JOB_REQUESTS = [
    ("archive", {"Asynchronous": True}),
    ("modify", {"Asynchronous": True, "Replace": {"StudyDescription": "Modified by the demo"}}),
    ("anonymize", {"Asynchronous": True}),
]


def seed(state: ClusterState, studies: int = 3, jobs_per_server: int = 3) -> str:
    servers = len(state.orthanc_urls)
    with httpx.Client(base_url=state.orthanc_lb_url, auth=DEMO_USER, timeout=60) as client:
        study_ids = [create_study(client, f"DEMO{number:03d}")[0] for number in range(1, studies + 1)]
        owners: Counter[str] = Counter()
        kinds = cycle(JOB_REQUESTS)
        for attempt in range(servers * jobs_per_server * 10):
            route, body = next(kinds)
            study = study_ids[attempt % len(study_ids)]
            created = client.post(f"/studies/{study}/{route}", json=body)
            created.raise_for_status()
            job = client.get(f"/jobs/{created.json()['ID']}").json()
            owners[job["Server"]["Name"]] += 1
            if len(owners) == servers and min(owners.values()) >= jobs_per_server:
                break
    lines = [f"{studies} studies; jobs created through the load balancer, by owner:"]
    lines += [f"  {name}: {count}" for name, count in sorted(owners.items())]
    return "\n".join(lines)

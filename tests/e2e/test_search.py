"""Finding jobs on the real cluster (issue #15, point 5): the listing's search filters and the CSV export,
through nginx, over jobs of two servers and two studies.

An archive's Content names no resource and always has the Description "REST API" (Orthanc sets it); a
C-STORE's names its study (``ParentResources``) and the modality's AET (``RemoteAet``): the text and
resource searches are checked on those.
"""

import csv
import io
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from orthanc_jobs.cluster.launcher import DEMO_USER, ClusterState
from tests.e2e.helpers import create_async_job, create_study, free_port, wait_job_state

pytestmark = pytest.mark.e2e


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_jobs_are_found_by_text_resource_time_and_exported(
    cluster: ClusterState, lb: httpx.Client, servers: dict[str, httpx.Client]
) -> None:
    first, second = servers["orthanc-1"], servers["orthanc-2"]
    started = datetime.now(UTC) - timedelta(seconds=1)
    study_a, _ = create_study(first, "SEARCH-A")
    study_b, _ = create_study(first, "SEARCH-B")
    archive_a = create_async_job(first, "archive", study_a)
    archive_b = create_async_job(second, "archive", study_b)
    ward = {"AET": "WARD7PACS", "Host": "127.0.0.1", "Port": free_port()}  # nothing listens: fails at once
    assert second.put("/modalities/ward7", json=ward).status_code == 200
    answer = second.post("/modalities/ward7/store", json={"Resources": [study_a], "Asynchronous": True})
    assert answer.status_code == 200, answer.text
    store_a = str(answer.json()["ID"])
    for job_id in (archive_a, archive_b, store_a):
        wait_job_state(lb, job_id, {"Success", "Failure"})
    finished = datetime.now(UTC) + timedelta(seconds=1)
    ours = {"ids": f"{archive_a},{archive_b},{store_a}"}

    def listed(**params: str) -> list[str]:
        answer = lb.get("/jobs", params=params)
        assert answer.status_code == 200, answer.text
        assert answer.headers["X-Total-Count"] == str(len(answer.json()))
        return list(answer.json())

    assert listed(**ours) == [archive_a, archive_b, store_a]  # creation order
    # Free text: the modality's AET in the Content, in any case; the error Orthanc gave; the Type.
    assert listed(q="ward7pacs", **{"created-since": _iso(started)}) == [store_a]
    assert listed(q="ward7PACS", status="Failure", server="orthanc-2") == [store_a]
    assert listed(q="ward7pacs", status="Success") == []
    assert listed(q="ARCHIVE", **ours) == [archive_a, archive_b]
    # A resource: the C-STORE names study A; the archives name none.
    assert listed(resource=study_a.upper()) == [store_a]
    assert listed(resource=study_b) == []
    # Time ranges, in both forms, on both times.
    since_orthanc = started.strftime("%Y%m%dT%H%M%S")
    between = {"created-since": since_orthanc, "created-until": _iso(finished)}
    assert listed(**between, **ours) == [archive_a, archive_b, store_a]
    assert listed(**{"created-until": since_orthanc}, **ours) == []
    assert listed(**{"completed-since": _iso(started)}, **ours) == [archive_a, archive_b, store_a]
    assert listed(**{"completed-since": _iso(finished)}, **ours) == []
    today = {"created-since": started.strftime("%Y-%m-%d")}
    assert listed(**today, server="orthanc-1", **ours) == [archive_a]

    # Mistakes are Orthanc-shaped 400s, through nginx.
    refused = lb.get("/jobs", params={"created-since": "yesterday"})
    assert refused.status_code == 400 and refused.json()["HttpStatus"] == 400
    assert "'yesterday' is not a time" in refused.json()["Message"]
    assert lb.get("/jobs", params={"resource": "not-a-study"}).status_code == 400

    # The export: the same filters, as CSV through nginx.
    with httpx.Client(base_url=cluster.lb_url, auth=DEMO_USER, timeout=30) as service:
        exported = service.get("/orthanc-jobs/export", params={"format": "csv", **ours})
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"] == "text/csv; charset=utf-8"
    assert exported.headers["content-disposition"].startswith("attachment; filename=orthanc-jobs-")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(row["ID"], row["Server"], row["State"]) for row in rows] == [
        (archive_a, "orthanc-1", "Success"),
        (archive_b, "orthanc-2", "Success"),
        (store_a, "orthanc-2", "Failure"),
    ]
    assert {row["Description"] for row in rows} == {"REST API"}
    assert rows[2]["ErrorCode"] != "0" and rows[2]["ErrorDescription"]
    assert all(started.strftime("%Y%m%dT") <= row["CompletionTime"] for row in rows)

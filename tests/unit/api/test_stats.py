"""The dashboard's statistics: jobs created per period by state and type, and where the time of each
type's jobs went (waiting for a slot, running)."""

import asyncio
import time
from typing import Any

import httpx

from orthanc_jobs.core.model import orthanc_timestamp
from tests.unit.api.conftest import URL1, public
from tests.unit.fake_orthanc import FakeOrthanc

URL2 = "http://127.0.0.1:8002"


def _ended(orthanc: FakeOrthanc, url: str, job_type: str, state: str, waited: float, ran: float) -> str:
    end = time.time() - 60
    job_id = orthanc.add_job(url, state, created=orthanc_timestamp(end - waited - ran))
    orthanc.jobs[url][job_id].update(
        Type=job_type,
        CompletionTime=orthanc_timestamp(end),
        Timestamp=orthanc_timestamp(end),
        EffectiveRuntime=ran,
    )
    return job_id


async def _read(service: httpx.AsyncClient, *job_ids: str) -> None:
    for job_id in job_ids:
        assert (await service.get(f"/jobs/{job_id}", headers=public())).status_code == 200


async def test_waiting_and_running_percentiles_per_type(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    ids = [_ended(orthanc, URL1, "DicomModalityStore", "Success", waited=n, ran=2 * n) for n in range(1, 11)]
    ids.append(_ended(orthanc, URL2, "Archive", "Failure", waited=30, ran=5))
    await _read(service, *ids)
    answer = await service.get("/orthanc-jobs/stats/durations", params={"window": 3600}, headers=public())
    assert answer.status_code == 200, answer.text
    types = answer.json()["Types"]
    store = types["DicomModalityStore"]
    assert store["Count"] == 10
    assert store["Wait"]["P50"] == 5 and store["Wait"]["P90"] == 9 and store["Wait"]["Max"] == 10
    assert store["Run"]["P50"] == 10 and store["Run"]["P99"] == 20
    assert types["Archive"] == {
        "Count": 1,
        "Wait": {"P50": 30, "P90": 30, "P99": 30, "Max": 30},
        "Run": {"P50": 5, "P90": 5, "P99": 5, "Max": 5},
    }


async def test_jobs_created_per_period_by_state_and_type(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    ids = [
        _ended(orthanc, URL1, "DicomModalityStore", "Failure", 1, 1),
        _ended(orthanc, URL1, "DicomModalityStore", "Failure", 1, 1),
        _ended(orthanc, URL2, "Archive", "Success", 1, 1),
    ]
    await _read(service, *ids)
    answer = await service.get(
        "/orthanc-jobs/stats/jobs", params={"bucket": 600, "window": 3600}, headers=public()
    )
    body = answer.json()
    assert body["Types"] == ["Archive", "DicomModalityStore"]
    totals: dict[str, dict[str, int]] = {}
    for period in body["Periods"]:
        for state, by_type in period["States"].items():
            for job_type, count in by_type.items():
                totals.setdefault(state, {}).setdefault(job_type, 0)
                totals[state][job_type] += count
    assert totals == {"Failure": {"DicomModalityStore": 2}, "Success": {"Archive": 1}}
    assert len(body["Periods"]) in (6, 7)
    too_many = await service.get(
        "/orthanc-jobs/stats/jobs", params={"bucket": 10, "window": 86_400}, headers=public()
    )
    assert too_many.status_code == 400 and "buckets" in too_many.json()["Message"]
    assert (await service.get("/orthanc-jobs/stats/durations")).status_code == 401


async def test_a_long_reading_lets_other_requests_through(
    service: httpx.AsyncClient, orthanc: FakeOrthanc, service_app: Any
) -> None:
    ids = [_ended(orthanc, URL1, "Archive", "Success", waited=1, ran=1) for _ in range(6)]
    await _read(service, *ids)
    service_app.state.services.registry.judged_per_step = 2
    turns = 0

    async def other() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    beside = asyncio.create_task(other())
    await asyncio.sleep(0)
    for path in ("/orthanc-jobs/stats/durations", "/orthanc-jobs/stats/jobs"):
        before = turns
        answer = await service.get(path, params={"window": 3600}, headers=public())
        assert answer.status_code == 200
        assert turns - before >= 3  # at least one pause per 2 jobs
    beside.cancel()
    assert (await service.get("/orthanc-jobs/stats/durations", headers=public())).json()["Types"]["Archive"][
        "Count"
    ] == 6

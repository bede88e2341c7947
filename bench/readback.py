"""Measures what issue #2 is about, on a fresh local cluster: can clients follow their jobs through nginx?

Creates asynchronous archive jobs through the load balancer and reads each back at once and after 1.5 s,
downloads archives, polls with an unmodified Orthanc client, and times GET /jobs/{id} through the
job-service against a direct request to the owner through the same nginx. Prints JSON.

    .venv/bin/python bench/readback.py [--jobs 30]
"""

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from orthanc_api_client import OrthancApiClient

from orthanc_jobs.cluster.demo import create_study
from orthanc_jobs.cluster.launcher import DEMO_USER, down, up


def median_ms(client: httpx.Client, path: str, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        assert client.get(path).status_code == 200
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 3)


def measure(jobs: int) -> dict[str, object]:
    directory = Path(tempfile.mkdtemp(prefix="orthanc-jobs-readback-"))
    state = up(directory, lb_port=0, orthanc_overrides={"MediaArchiveSize": jobs}, say=lambda *_: None)
    try:
        lb = httpx.Client(base_url=state.orthanc_lb_url, auth=DEMO_USER, timeout=30)
        study, _ = create_study(lb, "READBACK")
        immediate: Counter[int] = Counter()
        owners: Counter[str] = Counter()
        created = []
        for _ in range(jobs):
            job_id = lb.post(f"/studies/{study}/archive", json={"Asynchronous": True}).json()["ID"]
            answer = lb.get(f"/jobs/{job_id}")
            immediate[answer.status_code] += 1
            owners[answer.json()["Server"]["Name"]] += 1
            created.append(job_id)
        time.sleep(1.5)
        later = Counter(lb.get(f"/jobs/{job_id}").status_code for job_id in created)
        downloads = Counter(lb.get(f"/jobs/{job_id}/archive").status_code for job_id in created)
        anonymous = httpx.get(f"{state.orthanc_lb_url}/jobs").status_code

        client = OrthancApiClient(state.orthanc_lb_url + "/", user=DEMO_USER[0], pwd=DEMO_USER[1])
        polled = Counter()
        for _ in range(5):
            try:
                client.studies.anonymize_bulk(orthanc_ids=[study])
                polled["completed"] += 1
            except Exception as error:  # what a failing client sees
                polled[type(error).__name__] += 1

        job_id = created[-1]
        owner = lb.get(f"/jobs/{job_id}").json()["Server"]["Name"]
        direct = httpx.Client(base_url=f"{state.lb_url}/{owner}", auth=DEMO_USER, timeout=30)
        for warm in (lb, direct):
            median_ms(warm, f"/jobs/{job_id}", 20)
        through_service = median_ms(lb, f"/jobs/{job_id}", 300)
        to_owner = median_ms(direct, f"/jobs/{job_id}", 300)
        return {
            "cores": os.cpu_count(),
            "jobs_created": jobs,
            "owners": dict(owners),
            "read_back_immediately": dict(immediate),
            "read_back_after_1_5_s": dict(later),
            "archive_downloads": dict(downloads),
            "jobs_without_credentials": anonymous,
            "orthanc_api_client_bulk_anonymize": dict(polled),
            "completed_job_get_p50_ms": {"job_service": through_service, "owner_direct": to_owner},
            "ratio": round(through_service / to_owner, 2),
        }
    finally:
        down(directory, say=lambda *_: None)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30)
    print(json.dumps(measure(parser.parse_args().jobs), indent=2))

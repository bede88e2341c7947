"""Through the load balancer, the cluster's jobs read like one Orthanc's."""

import io
import zipfile
from collections import Counter

import httpx
import pytest
from orthanc_api_client import OrthancApiClient

from orthanc_jobs.cluster.launcher import DEMO_USER, ClusterState
from tests.e2e.helpers import TERMINAL, create_async_job, create_study, owner_of, wait_for, wait_job_state

pytestmark = pytest.mark.e2e

KINDS = ["archive", "modify", "anonymize"]
EXPECTED_TYPES = {"archive": "Archive", "modify": "ResourceModification", "anonymize": "ResourceModification"}


@pytest.fixture(scope="module")
def studies(lb: httpx.Client) -> list[str]:
    return [create_study(lb, f"READBACK{n}")[0] for n in range(3)]


def test_every_job_created_through_the_load_balancer_reads_back_at_once(
    lb: httpx.Client, servers: dict[str, httpx.Client], studies: list[str]
) -> None:
    owners: Counter[str] = Counter()
    read_back = []
    for attempt in range(90):
        kind = KINDS[attempt % len(KINDS)]
        job_id = create_async_job(lb, kind, studies[attempt % len(studies)])
        answer = lb.get(f"/jobs/{job_id}")  # immediately, through a random-choosing load balancer
        read_back.append(answer.status_code)
        assert answer.status_code == 200, answer.text
        job = answer.json()
        assert job["ID"] == job_id
        assert job["Type"] == EXPECTED_TYPES[kind]
        owner = owner_of(servers, job_id)
        assert job["Server"]["Name"] == owner
        assert job["Server"]["Status"] == "alive"
        direct = servers[owner].get(f"/jobs/{job_id}").json()
        assert job["CreationTime"] == direct["CreationTime"]
        owners[owner] += 1
        if len(owners) == len(servers) and min(owners.values()) >= 4:
            break
    assert set(owners) == set(servers), f"jobs landed only on {owners}"
    assert read_back.count(200) == len(read_back)


def _expanded_union(servers: dict[str, httpx.Client]) -> dict[str, dict]:
    union = {}
    for name, client in servers.items():
        for job in client.get("/jobs", params={"expand": ""}).json():
            union[job["ID"]] = dict(job, Owner=name)
    return union


def _quiet_union(servers: dict[str, httpx.Client]) -> dict[str, dict]:
    """The servers' own jobs, once none of them is running (so that nothing changes while we compare)."""

    def finished() -> dict[str, dict] | None:
        union = _expanded_union(servers)
        return union if all(job["State"] in TERMINAL for job in union.values()) else None

    return dict(wait_for(finished, what="every job of every server finished"))


def test_listing_is_the_union_of_the_servers_own_jobs(
    lb: httpx.Client, servers: dict[str, httpx.Client], studies: list[str]
) -> None:
    for kind in KINDS:
        create_async_job(lb, kind, studies[0])
    union = _quiet_union(servers)
    assert union, "the servers have no jobs: nothing was tested"
    # Completion events take a few milliseconds to arrive: wait (briefly) until the service has them all.
    wait_for(
        lambda: all(j["State"] == union[j["ID"]]["State"] for j in lb.get("/jobs?expand").json()),
        timeout=3,
        what="the service to see every job finished",
    )

    ids = lb.get("/jobs").json()
    assert sorted(ids) == sorted(union)
    assert lb.get("/jobs", params={"expand": "false"}).json() == ids

    expanded = lb.get("/jobs", params={"expand": ""}).json()
    assert {job["ID"] for job in expanded} == set(union)
    for job in expanded:
        own = union[job["ID"]]
        assert job["Server"]["Name"] == own["Owner"]
        for key in ("Type", "State", "Progress", "CreationTime", "ErrorCode", "Content"):
            assert job[key] == own[key], key

    for name in servers:
        mine = lb.get("/jobs", params={"server": name}).json()
        assert sorted(mine) == sorted(i for i, job in union.items() if job["Owner"] == name)
    successes = lb.get("/jobs", params={"status": "Success"}).json()
    assert sorted(successes) == sorted(i for i, job in union.items() if job["State"] == "Success")
    archives = lb.get("/jobs", params={"type": "Archive", "expand": ""}).json()
    assert sorted(j["ID"] for j in archives) == sorted(i for i, j in union.items() if j["Type"] == "Archive")
    both = lb.get("/jobs", params=[("status", "Success"), ("status", "Failure")]).json()
    assert sorted(both) == sorted(i for i, job in union.items() if job["State"] in TERMINAL)


def test_pages_follow_creation_order(lb: httpx.Client) -> None:
    everything = lb.get("/jobs", params={"expand": ""})
    jobs = everything.json()
    assert int(everything.headers["X-Total-Count"]) == len(jobs)
    created = [(job["CreationTime"], job["ID"]) for job in jobs]
    assert created == sorted(created)
    pages = []
    for offset in range(0, len(jobs), 7):
        page = lb.get("/jobs", params={"limit": 7, "offset": offset})
        assert int(page.headers["X-Total-Count"]) == len(jobs)
        pages.extend(page.json())
    assert pages == [job["ID"] for job in jobs]


def test_async_archive_downloads_through_the_load_balancer(lb: httpx.Client) -> None:
    study, instances = create_study(lb, "DOWNLOAD", instances=3)
    for _ in range(6):  # several, so that owners vary
        job_id = create_async_job(lb, "archive", study)
        assert wait_job_state(lb, job_id, TERMINAL)["State"] == "Success"
        with lb.stream("GET", f"/jobs/{job_id}/archive") as answer:
            assert answer.status_code == 200
            assert answer.headers["content-type"] == "application/zip"
            body = answer.read()
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            assert archive.testzip() is None
            names = [n for n in archive.namelist() if not n.endswith("/")]
        assert len(names) == len(instances)
        for name in names:
            with zipfile.ZipFile(io.BytesIO(body)) as archive:
                assert archive.read(name)[128:132] == b"DICM"


def test_unmodified_orthanc_client_creates_and_polls_jobs(cluster: ClusterState, lb: httpx.Client) -> None:
    """orthanc-api-client's bulk anonymization: an async job, then polling /jobs/{id} to completion."""
    client = OrthancApiClient(cluster.orthanc_lb_url + "/", user=DEMO_USER[0], pwd=DEMO_USER[1])
    for n in range(4):
        study, _ = create_study(lb, f"CLIENT{n}")
        _, _, anonymized_studies, _ = client.studies.anonymize_bulk(orthanc_ids=[study])
        assert len(anonymized_studies) == 1
        assert lb.get(f"/studies/{anonymized_studies[0]}").status_code == 200

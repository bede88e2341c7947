"""Query/retrieve through the load balancer, with a real PACS (a lone Orthanc) answering C-FIND, C-MOVE
and C-GET: a query's handle follows the server that ran it, as a job does.

Orthanc's DICOM servers listen on every interface, so these tests run in a network namespace of their own
whose one interface is the loopback (tests/e2e/test_own_network.py starts them there); elsewhere they are
not collected (tests/e2e/conftest.py).
"""

import random
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from orthanc_jobs.cluster.launcher import DEMO_USER, ClusterState
from tests.e2e.conftest import ORTHANC_CONFIG, orthanc_root, running_cluster
from tests.e2e.helpers import cli, wait_for, wait_job_state
from tests.e2e.pacs import Pacs

pytestmark = pytest.mark.e2e

STUDIES = 3
ROUNDS = 30
STUDY_QUERY = {"Level": "Study", "Query": {"PatientID": "*", "StudyInstanceUID": ""}}


@pytest.fixture(scope="module")
def qr_cluster(orthanc_version: str) -> Iterator[ClusterState]:
    # The cluster's servers receive the studies a C-MOVE sends them: their DICOM servers are on.
    config = {**ORTHANC_CONFIG, "DicomServerEnabled": "true"}
    with running_cluster("qr", orthanc_version, config) as state:
        yield state


@pytest.fixture(scope="module")
def pacs(qr_cluster: ClusterState, orthanc_version: str) -> Iterator[Pacs]:
    started = Pacs(orthanc_root(orthanc_version), qr_cluster, STUDIES)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(scope="module")
def lb(qr_cluster: ClusterState, pacs: Pacs) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=qr_cluster.orthanc_lb_url, auth=DEMO_USER, timeout=60) as client:
        declared = client.put("/modalities/pacs", json=pacs.modality())
        assert declared.status_code == 200, declared.text
        yield client


def study_uids_in_cluster(lb: httpx.Client) -> set[str]:
    return {
        study["MainDicomTags"]["StudyInstanceUID"]
        for study in lb.get("/studies", params={"expand": ""}).json()
    }


def forget_studies(lb: httpx.Client, uids: list[str]) -> None:
    for study in lb.get("/studies", params={"expand": ""}).json():
        if study["MainDicomTags"]["StudyInstanceUID"] in uids:
            assert lb.delete(f"/studies/{study['ID']}").status_code == 200


def test_a_modality_declared_through_the_load_balancer_is_known_to_every_server(
    qr_cluster: ClusterState, lb: httpx.Client, pacs: Pacs
) -> None:
    for name in qr_cluster.orthanc_urls:
        with httpx.Client(base_url=f"{qr_cluster.lb_url}/{name}", auth=DEMO_USER, timeout=10) as server:
            assert "pacs" in server.get("/modalities").json(), name
            echo = server.post("/modalities/pacs/echo", json={})
            assert echo.status_code == 200, (name, echo.text)


def test_a_modality_declared_on_one_server_alone_stays_there(
    qr_cluster: ClusterState, lb: httpx.Client, pacs: Pacs
) -> None:
    """What the job-service's declaring on every server is for: Orthanc reads its modalities into memory
    when it starts, and with DicomModalitiesInDatabase keeps them in the database per server (a global
    property that is not shared): a modality declared on one server is never seen by the others, not at
    once, not later, not after they restart; the server that has it keeps it across its own restart."""
    names = sorted(qr_cluster.orthanc_urls)[:2]
    first, second = (
        httpx.Client(base_url=f"{qr_cluster.lb_url}/{name}", auth=DEMO_USER, timeout=10) for name in names
    )
    with first, second:
        assert first.put("/modalities/one-server", json=pacs.modality()).status_code == 200
        time.sleep(2)
        assert "one-server" not in second.get("/modalities").json()
        cli(qr_cluster, "restart", names[1])
        assert "one-server" not in second.get("/modalities").json()
        cli(qr_cluster, "restart", names[0])
        assert "one-server" in first.get("/modalities").json()
        assert {"pacs"} <= set(second.get("/modalities").json())  # declared through the job-service
    assert lb.delete("/modalities/one-server").status_code == 200
    for name in qr_cluster.orthanc_urls:
        listed = httpx.get(f"{qr_cluster.lb_url}/{name}/modalities", auth=DEMO_USER).json()
        assert "one-server" not in listed, name


def test_query_answers_and_retrieve_by_c_move_through_the_load_balancer(
    lb: httpx.Client, pacs: Pacs, qr_cluster: ClusterState
) -> None:
    forget_studies(lb, pacs.study_uids)
    made = lb.post("/modalities/pacs/query", json=STUDY_QUERY)
    assert made.status_code == 200, made.text
    query_id = made.json()["ID"]
    assert made.json()["Path"] == f"/queries/{query_id}"
    # Every follow-up reaches the server that ran the query, whichever one nginx picked for it.
    for _ in range(6):
        assert lb.get(f"/queries/{query_id}").status_code == 200
        assert sorted(lb.get(f"/queries/{query_id}/answers").json()) == [str(n) for n in range(STUDIES)]
    assert lb.get(f"/queries/{query_id}/level").content.strip(b'"') in (b"Study", b"study")
    assert query_id in lb.get("/queries").json()
    answers = lb.get(f"/queries/{query_id}/answers", params={"expand": ""}).json()
    found = {answer["0020,000d"]["Value"] for answer in answers}
    assert found == set(pacs.study_uids)

    # One answer, as a job of the owner, followed through /jobs like any job.
    retrieved = lb.post(f"/queries/{query_id}/answers/0/retrieve", json={"Synchronous": False})
    assert retrieved.status_code == 200, retrieved.text
    job = wait_job_state(lb, retrieved.json()["ID"], {"Success"}, timeout=60)
    assert job["Type"] == "DicomMoveScu" and job["Server"]["Name"] in qr_cluster.orthanc_urls
    first_uid = lb.get(f"/queries/{query_id}/answers/0/content", params={"simplify": ""}).json()[
        "StudyInstanceUID"
    ]
    assert first_uid in study_uids_in_cluster(lb)

    # The whole query.
    everything = lb.post(f"/queries/{query_id}/retrieve", json={"Synchronous": False})
    assert everything.status_code == 200, everything.text
    wait_job_state(lb, everything.json()["ID"], {"Success"}, timeout=60)
    assert set(pacs.study_uids) <= study_uids_in_cluster(lb)
    assert lb.delete(f"/queries/{query_id}").status_code == 200
    assert lb.get(f"/queries/{query_id}").status_code == 404


def test_retrieve_by_c_get_where_the_version_has_it(
    lb: httpx.Client, pacs: Pacs, orthanc_version: str
) -> None:
    if orthanc_version == "1.10":
        pytest.skip("Orthanc 1.10 has no C-GET SCU (1.12.7 has POST /modalities/{name}/get)")
    forget_studies(lb, pacs.study_uids)
    resources = [{"StudyInstanceUID": uid} for uid in pacs.study_uids]
    retrieved = lb.post(
        "/modalities/pacs/get", json={"Level": "Study", "Resources": resources, "Asynchronous": True}
    )
    assert retrieved.status_code == 200, retrieved.text
    job = wait_job_state(lb, retrieved.json()["ID"], {"Success"}, timeout=60)
    assert job["Type"] == "DicomGetScu", job
    assert set(pacs.study_uids) <= study_uids_in_cluster(lb), (job, pacs.log())


def _round(query: httpx.Client, follow: list[httpx.Client], pacs: Pacs) -> bool:
    """One query/retrieve round: the query on ``query``, each follow-up on one of ``follow`` at random (as a
    load balancer that knows nothing of queries would send them). True if every request succeeded."""
    made = query.post("/modalities/pacs/query", json=STUDY_QUERY)
    if made.status_code != 200:
        return False
    query_id = made.json()["ID"]
    steps: list[tuple[str, str, Any]] = [
        ("GET", f"/queries/{query_id}/answers", None),
        ("GET", f"/queries/{query_id}/answers/0/content", None),
        ("POST", f"/queries/{query_id}/answers/0/retrieve", {"Synchronous": True}),
    ]
    for method, path, body in steps:
        if random.choice(follow).request(method, path, json=body).status_code != 200:
            return False
    return True


def test_thirty_rounds_in_a_row_with_no_error(qr_cluster: ClusterState, lb: httpx.Client, pacs: Pacs) -> None:
    """Before: the same rounds sent as a plain round-robin would (query on one server, follow-ups on any),
    straight to the servers; after: through the load balancer and the job-service."""
    servers = [
        httpx.Client(base_url=f"{qr_cluster.lb_url}/{name}", auth=DEMO_USER, timeout=60)
        for name in qr_cluster.orthanc_urls
    ]
    try:
        for server in servers:
            server.put("/modalities/pacs", json=pacs.modality())
        random.seed(13)
        before = sum(_round(random.choice(servers), servers, pacs) for _ in range(ROUNDS))
        after = sum(_round(lb, [lb], pacs) for _ in range(ROUNDS))
    finally:
        for server in servers:
            server.close()
    print(f"\nquery/retrieve rounds without the job-service: {before}/{ROUNDS}; through it: {after}/{ROUNDS}")
    assert after == ROUNDS
    assert before < ROUNDS  # the failure the job-service removes (a follow-up on another server: 404)


def test_a_query_whose_server_restarted_is_gone_as_orthanc_says(
    qr_cluster: ClusterState, lb: httpx.Client, pacs: Pacs
) -> None:
    query_id = lb.post("/modalities/pacs/query", json=STUDY_QUERY).json()["ID"]
    owner = next(
        name
        for name in qr_cluster.orthanc_urls
        if httpx.get(f"{qr_cluster.lb_url}/{name}/queries/{query_id}", auth=DEMO_USER).status_code == 200
    )
    cli(qr_cluster, "restart", owner)
    gone = wait_for(
        lambda: (answer := lb.get(f"/queries/{query_id}/answers")).status_code == 404 and answer,
        timeout=20,
        what="the lost query answering 404",
    )
    assert gone.json()["HttpStatus"] == 404
    # The modality came back with the server (kept in the database), and the next query works.
    assert "pacs" in httpx.get(f"{qr_cluster.lb_url}/{owner}/modalities", auth=DEMO_USER).json()
    assert lb.post("/modalities/pacs/query", json=STUDY_QUERY).status_code == 200


def test_modality_names_and_paths_are_checked(lb: httpx.Client) -> None:
    for path in ("/modalities/pacs/query%3Bx", "/queries/not-a-query/answers", "/modalities/a%01b/echo"):
        answer = lb.post(path, json={})
        assert 400 <= answer.status_code < 500 and answer.headers["content-type"] == "application/json", path
    assert httpx.post(f"{lb.base_url}/modalities/pacs/query", json=STUDY_QUERY).status_code == 401


def test_orthanc_api_client_and_pyorthanc_unmodified(
    qr_cluster: ClusterState, lb: httpx.Client, pacs: Pacs
) -> None:
    """Two Python clients of Orthanc's REST API, used as against one Orthanc: each query is followed by
    requests under /queries/{id}/ (its answers, each answer's content), which nginx spreads over the
    servers."""
    from orthanc_api_client import OrthancApiClient
    from pyorthanc import Job, Modality, Orthanc

    api_client = OrthancApiClient(qr_cluster.orthanc_lb_url + "/", user=DEMO_USER[0], pwd=DEMO_USER[1])
    api_client.modalities.configure("pacs-api-client", pacs.modality())
    for _ in range(3):
        studies = api_client.modalities.query_studies(
            "pacs-api-client", {"StudyInstanceUID": "", "PatientID": "*"}
        )
        assert {study.dicom_id for study in studies} == set(pacs.study_uids)
    forget_studies(lb, pacs.study_uids[:1])
    assert api_client.modalities.retrieve_study(
        "pacs-api-client", pacs.study_uids[0]
    )  # C-MOVE, then a lookup
    assert pacs.study_uids[0] in study_uids_in_cluster(lb)

    with Orthanc(
        qr_cluster.orthanc_lb_url, username=DEMO_USER[0], password=DEMO_USER[1], timeout=60
    ) as client:
        client.put_modalities_id("pacs-pyorthanc", json=pacs.modality())
        modality = Modality(client, "pacs-pyorthanc")
        for _ in range(3):
            found = modality.query({"Level": "Study", "Query": {"PatientID": "*", "StudyInstanceUID": ""}})
            assert {answer["StudyInstanceUID"] for answer in found["answers"]} == set(pacs.study_uids)
        forget_studies(lb, pacs.study_uids)
        made = client.post_queries_id_answers_index_retrieve(found["ID"], "0", json={"Asynchronous": True})
        job = Job(made["ID"], client)
        wait_for(lambda: job.state.value in ("Success", "Failure"), timeout=60, what="the retrieve job")
        assert job.state.value == "Success"
        whole = modality.move(found["ID"], {"Asynchronous": True})
        wait_job_state(lb, whole["ID"], {"Success"}, timeout=60)
    assert set(pacs.study_uids) <= study_uids_in_cluster(lb)

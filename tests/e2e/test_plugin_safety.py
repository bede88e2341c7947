"""The reporter plugin inside real Orthanc servers, on every Orthanc version the project supports.

Jobs whose JSON Orthanc cannot write (an asynchronous archive of nothing has a NaN progress until it runs,
and for ever if it is cancelled before: a plugin that reads such a job in-process aborts Orthanc 1.10.1 and
1.12.7), jobs cancelled while pending, jobs that fail at once and media of no instance, hammered through the
load balancer: no Orthanc aborts, every request is answered, and the job-service lists every job with its
true end state although each Orthanc keeps only its last 10 (the default JobsHistorySize).
"""

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from orthanc_jobs.cluster.launcher import DEMO_USER, ClusterState
from tests.e2e.conftest import running_cluster
from tests.e2e.helpers import (
    SilentModality,
    create_study,
    direct,
    free_port,
    listed_states,
    wait_all_listed,
    wait_for,
)

pytestmark = pytest.mark.e2e

# ConcurrentJobs 1: a C-STORE to a silent modality holds every later job of its server Pending. The
# history is Orthanc's default (10 finished jobs).
SAFETY_CONFIG = {"ConcurrentJobs": "1", "DicomScuTimeout": "3600"}
EMPTY = {"Resources": [], "Synchronous": False}


@pytest.fixture(scope="module")
def safety_cluster(orthanc_version: str) -> Iterator[ClusterState]:
    with running_cluster("safety", orthanc_version, SAFETY_CONFIG) as state:
        yield state


@pytest.fixture(scope="module")
def lb(safety_cluster: ClusterState) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=safety_cluster.orthanc_lb_url, auth=DEMO_USER, timeout=60) as client:
        yield client


def assert_every_orthanc_alive(cluster: ClusterState) -> None:
    state = ClusterState.load(Path(cluster.directory))
    for process in state.processes:
        log = Path(process.log).read_text(errors="replace")
        assert "terminate called" not in log, f"{process.name} aborted:\n{log[-2000:]}"
        assert process.is_running(), f"{process.name} is not running:\n{log[-2000:]}"


def owner_answer(cluster: ClusterState, job_id: str) -> httpx.Response:
    """``GET /jobs/{id}`` from the one server that holds the job."""
    for name in cluster.orthanc_urls:
        with direct(cluster, name) as client:
            answer = client.get(f"/jobs/{job_id}")
        if answer.status_code != 404:
            return answer
    raise AssertionError(f"no server holds {job_id}")


def in_parallel(threads: int, work: Callable[[httpx.Client, int], None], base_url: str) -> None:
    """``work(client, thread number)`` on ``threads`` threads at once, each with its own connection."""
    errors: list[BaseException] = []

    def run(number: int) -> None:
        try:
            with httpx.Client(base_url=base_url, auth=DEMO_USER, timeout=60) as client:
                work(client, number)
        except BaseException as error:  # reported by the test, not lost in a thread
            errors.append(error)

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(300)
    assert not errors, errors


def test_the_servers_run_the_version_under_test(lb: httpx.Client, orthanc_version: str) -> None:

    def versions() -> set[str] | None:
        servers = lb.get("/../orthanc-jobs/servers").json()
        assert [s["Status"] for s in servers] == ["alive"] * 3
        found = {s["OrthancVersion"].rsplit(".", 1)[0] for s in servers}
        return None if "" in found else found  # the version comes with a heartbeat once Orthanc answers

    assert wait_for(versions, timeout=10) == {orthanc_version}


def test_archives_of_nothing_through_the_load_balancer_never_abort_orthanc(
    safety_cluster: ClusterState, lb: httpx.Client
) -> None:
    """The reported crash: 150 asynchronous archives of an empty selection (a 'download selection' with
    nothing selected). Before the fix, 7 were answered and every Orthanc of the cluster aborted."""
    answers: Counter[int] = Counter()
    created: list[str] = []

    def create(client: httpx.Client, number: int) -> None:
        for _ in range(50):
            answer = client.post("/tools/create-archive", json=EMPTY)
            answers[answer.status_code] += 1
            if answer.status_code == 200:
                created.append(answer.json()["ID"])

    in_parallel(3, create, safety_cluster.orthanc_lb_url)

    assert answers == {200: 150}
    assert_every_orthanc_alive(safety_cluster)
    # Each Orthanc now holds only its last 10: the job-service has all 150, each with its end state.
    ids = set(created)
    states = wait_all_listed(lb, ids)
    assert Counter(states.values()) == {"Success": 150}
    for job_id in list(ids)[:20]:
        job = lb.get(f"/jobs/{job_id}").json()
        assert (job["ID"], job["Type"], job["State"], job["Progress"]) == (job_id, "Archive", "Success", 100)


def test_odd_jobs_hammered_while_clients_read_them(safety_cluster: ClusterState, lb: httpx.Client) -> None:
    """Archives and media of nothing, C-STOREs that fail at once and real archives, created from 4 threads
    while 2 more read the cluster's jobs and each new job, through the load balancer."""
    study, _ = create_study(lb, "ODD")
    nowhere = {"AET": "NOWHERE", "Host": "127.0.0.1", "Port": free_port()}  # nothing listens: fails at once
    for name in safety_cluster.orthanc_urls:
        with direct(safety_cluster, name) as client:
            assert client.put("/modalities/nowhere", json=nowhere).status_code == 200
    requests = [
        ("/tools/create-archive", EMPTY, "Success"),
        ("/tools/create-media", EMPTY, "Success"),
        ("/modalities/nowhere/store", {"Resources": [study], "Asynchronous": True}, "Failure"),
        (f"/studies/{study}/archive", {"Asynchronous": True}, "Success"),
    ]
    expected: dict[str, str] = {}
    answers: Counter[int] = Counter()
    done = threading.Event()

    def create(client: httpx.Client, number: int) -> None:
        for round_number in range(30):
            route, body, end_state = requests[(number + round_number) % len(requests)]
            answer = client.post(route, json=body)
            answers[answer.status_code] += 1
            if answer.status_code == 200:
                expected[answer.json()["ID"]] = end_state

    def read(client: httpx.Client, number: int) -> None:
        while not done.is_set():
            assert client.get("/jobs", params={"expand": ""}).status_code == 200
            for job_id in list(expected)[-5:]:
                # 200; the owner's own 400 while it cannot write the job; 404 once Orthanc forgot a job
                # whose event is still on its way: never a 5xx.
                assert client.get(f"/jobs/{job_id}").status_code in (200, 400, 404)

    reader_errors: list[BaseException] = []

    def readers() -> None:
        try:
            in_parallel(2, read, safety_cluster.orthanc_lb_url)
        except BaseException as error:
            reader_errors.append(error)

    reading = threading.Thread(target=readers)
    reading.start()
    try:
        in_parallel(4, create, safety_cluster.orthanc_lb_url)
    finally:
        done.set()
        reading.join(60)
    assert not reader_errors, reader_errors

    assert answers == {200: 120}
    assert_every_orthanc_alive(safety_cluster)
    ids = set(expected)
    wait_all_listed(lb, ids)
    states = wait_for(lambda: found if (found := listed_states(lb, ids)) == expected else None, timeout=30)
    assert Counter(states.values()) == Counter(expected.values())


def test_jobs_cancelled_paused_and_resumed_while_pending(
    safety_cluster: ClusterState, lb: httpx.Client
) -> None:
    """Behind a C-STORE that never ends, on every server: archives and media of nothing, paused, resumed
    and cancelled through the load balancer. A pending archive of nothing cannot be written by Orthanc
    (400) and stays so once cancelled: the load balancer answers what its owner answers, as one Orthanc."""
    study, _ = create_study(lb, "PENDING")
    silent = SilentModality()
    blockers = {}
    try:
        for name in safety_cluster.orthanc_urls:
            with direct(safety_cluster, name) as client:
                blockers[name] = silent.store(client, study)
        for name, blocker in blockers.items():
            wait_for(lambda b=blocker: lb.get(f"/jobs/{b}").json()["State"] == "Running", what=f"{name} busy")

        pending = [lb.post(route, json=EMPTY).json()["ID"] for route in ["/tools/create-archive"] * 9]
        media = [lb.post("/tools/create-media", json=EMPTY).json()["ID"] for _ in range(6)]
        for job_id in pending + media:
            assert lb.post(f"/jobs/{job_id}/pause").json() == {}
            assert lb.post(f"/jobs/{job_id}/resume").json() == {}
            assert lb.post(f"/jobs/{job_id}/cancel").json() == {}
        assert_every_orthanc_alive(safety_cluster)

        for job_id in media:  # Orthanc can write these: cancelled, as Orthanc says
            job = lb.get(f"/jobs/{job_id}").json()
            assert (job["State"], job["ErrorCode"]) == ("Failure", 37)
        for job_id in pending:
            answer, own = lb.get(f"/jobs/{job_id}"), owner_answer(safety_cluster, job_id)
            assert answer.status_code == own.status_code, (answer.text, own.text)
            if own.status_code == 400:
                assert answer.json()["HttpStatus"] == 400
            else:
                assert (answer.json()["State"], answer.json()["ErrorCode"]) == ("Failure", 37)
            assert lb.post(f"/jobs/{job_id}/cancel").json() == {}  # a no-op, as on its owner
    finally:
        silent.close()
    for blocker in blockers.values():
        wait_for(lambda b=blocker: lb.get(f"/jobs/{b}").json()["State"] == "Failure", timeout=60)
    assert_every_orthanc_alive(safety_cluster)

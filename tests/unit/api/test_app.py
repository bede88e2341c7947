"""The job-service's routes, in process, with the Orthanc servers played by an httpx mock transport.

These are unit tests of the service's own logic; the end-to-end tests (tests/e2e) run against real Orthanc.
"""

import base64
import contextlib
import hmac
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from orthanc_jobs.api.app import build_services, create_app
from orthanc_jobs.config import Settings
from orthanc_jobs.core.orthanc import OrthancClient
from orthanc_jobs.core.store import SqliteStore
from orthanc_jobs.core.store.base import Pending
from tests.unit.api.conftest import SECRET, URL1, plugin, public
from tests.unit.fake_orthanc import GOOD, FakeOrthanc


async def test_an_unknown_id_is_looked_up_on_every_server(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    job_id = orthanc.add_job("http://127.0.0.1:8002")
    answer = await service.get(f"/jobs/{job_id}", headers=public())
    assert answer.status_code == 200
    assert answer.json()["Server"] == {
        "Name": "orthanc-2",
        "Url": "http://127.0.0.1:8002",
        "Status": "alive",
        "HistoryOnly": False,
        "Stuck": False,
        "StuckSince": None,
    }
    asked = len(orthanc.requests)
    assert (await service.get(f"/jobs/{job_id}", headers=public())).status_code == 200
    assert len(orthanc.requests) == asked  # known now: answered from the registry
    missing = await service.get(f"/jobs/{uuid.uuid4()}", headers=public())
    assert missing.status_code == 404
    assert missing.json()["OrthancError"] == "Unknown resource"


async def test_credentials_are_checked_once_then_cached(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    assert (await service.get("/jobs")).status_code == 401
    bad = await service.get(
        "/jobs", headers={"Authorization": "Basic " + base64.b64encode(b"demo:x").decode()}
    )
    assert bad.status_code == 401
    assert bad.headers["WWW-Authenticate"].startswith("Basic")
    for _ in range(3):
        assert (await service.get("/jobs", headers=public())).status_code == 200
    checks = [r for r in orthanc.requests if r.url.path == "/jobs"]
    # One round: every server asked once.
    assert len([r for r in checks if r.headers.get("authorization") == GOOD]) == len(orthanc.jobs)


async def test_listing_filters_and_pages(service: httpx.AsyncClient, orthanc: FakeOrthanc) -> None:
    ids = [orthanc.add_job("http://127.0.0.1:8001", "Success", f"20261128T10000{n}.000000") for n in range(5)]
    running = orthanc.add_job("http://127.0.0.1:8002", "Running", "20261128T100009.000000")
    for job_id in [*ids, running]:
        await service.get(f"/jobs/{job_id}", headers=public())
    assert (await service.get("/jobs", headers=public())).json() == [*ids, running]
    assert (await service.get("/jobs?expand=false", headers=public())).json() == [*ids, running]
    assert (await service.get("/jobs?status=running", headers=public())).json() == [running]
    assert (await service.get("/jobs?server=orthanc-2", headers=public())).json() == [running]
    page = await service.get("/jobs?limit=2&offset=1&status=Success", headers=public())
    assert page.json() == ids[1:3]
    assert page.headers["X-Total-Count"] == "5"
    expanded = (await service.get("/jobs?expand&status=Success,Running", headers=public())).json()
    assert [j["ID"] for j in expanded] == [*ids, running]
    assert (await service.get("/jobs?status=Exploded", headers=public())).status_code == 400
    assert (await service.get("/jobs?limit=-1", headers=public())).status_code == 400


async def test_an_action_is_forwarded_with_the_callers_credentials_then_read_back(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    job_id = orthanc.add_job("http://127.0.0.1:8001")
    answer = await service.post(f"/jobs/{job_id}/pause", headers=public())
    assert (answer.status_code, answer.json()) == (200, {})
    forwarded = [r for r in orthanc.requests if r.method == "POST"]
    assert [r.headers["authorization"] for r in forwarded] == [GOOD]
    assert (await service.get(f"/jobs/{job_id}", headers=public())).json()["State"] == "Paused"


async def test_an_owners_empty_error_becomes_json(service: httpx.AsyncClient, orthanc: FakeOrthanc) -> None:
    job_id = orthanc.add_job("http://127.0.0.1:8001")
    answer = await service.post(f"/jobs/{job_id}/resume", headers=public())
    assert answer.status_code == 400
    assert answer.json()["HttpStatus"] == 400


async def test_unknown_actions_and_bad_keys_are_refused_before_forwarding(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    job_id = orthanc.add_job("http://127.0.0.1:8001")
    await service.get(f"/jobs/{job_id}", headers=public())
    before = len(orthanc.requests)
    unknown = await service.post(f"/jobs/{job_id}/explode", headers=public())
    assert unknown.status_code == 405
    assert "cancel" in unknown.json()["Message"]
    assert (await service.get(f"/jobs/{job_id}/arch.ive", headers=public())).status_code == 400
    assert (await service.get("/jobs/not-a-uuid", headers=public())).status_code == 404
    assert len(orthanc.requests) == before


async def test_outputs_are_streamed_from_the_owner(service: httpx.AsyncClient, orthanc: FakeOrthanc) -> None:
    job_id = orthanc.add_job("http://127.0.0.1:8002", "Success")
    answer = await service.get(f"/jobs/{job_id}/archive", headers=public())
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/zip"
    assert answer.headers["content-disposition"] == "filename=a.zip"
    assert answer.content == b"PK" + b"x" * 100_000
    missing = await service.get(f"/jobs/{job_id}/media", headers=public())
    assert missing.status_code == 404
    assert missing.json()["Message"] == "Job has no such output"


async def test_behind_nginx_an_output_is_fetched_by_nginx_from_its_owner(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    """nginx names where it reaches each server (X-Orthanc-Jobs-Owners): the answer sends it there for the
    owner's output, and nothing is asked of the owner here; an owner nginx does not name, or a map that
    names it wrongly, is streamed from here as without nginx."""
    job_id = orthanc.add_job("http://127.0.0.1:8002", "Success")
    owners = (
        "http://127.0.0.1:8001 /orthanc-jobs-owner/orthanc-1/, "
        "http://127.0.0.1:8002/ /orthanc-jobs-owner/orthanc-2/"  # as written (normalised to compare)
    )
    before = len(orthanc.requests)
    answer = await service.get(f"/jobs/{job_id}/archive", headers=public(**{"X-Orthanc-Jobs-Owners": owners}))
    assert answer.status_code == 200 and answer.content == b""
    assert answer.headers["x-accel-redirect"] == f"/orthanc-jobs-owner/orthanc-2/jobs/{job_id}/archive"
    assert not [r for r in orthanc.requests[before:] if r.url.path.endswith("/archive")]
    for other in (
        "http://127.0.0.1:8001 /orthanc-jobs-owner/orthanc-1/",
        "http://127.0.0.1:8002 no-slash",
        "junk",
    ):
        answer = await service.get(
            f"/jobs/{job_id}/archive", headers=public(**{"X-Orthanc-Jobs-Owners": other})
        )
        assert "x-accel-redirect" not in answer.headers and answer.content == b"PK" + b"x" * 100_000, other
    # Refused before anything else, as without nginx.
    refused = await service.get(f"/jobs/{job_id}/archive", headers={"X-Orthanc-Jobs-Owners": owners})
    assert refused.status_code == 401 and "x-accel-redirect" not in refused.headers


async def test_an_unreachable_owner_is_a_clear_error(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    job_id = orthanc.add_job("http://127.0.0.1:8001")
    await service.get(f"/jobs/{job_id}", headers=public())
    orthanc.down.add("http://127.0.0.1:8001")
    answer = await service.post(f"/jobs/{job_id}/pause", headers=public())
    assert answer.status_code == 503
    assert "orthanc-1" in answer.json()["Message"]


async def test_the_internal_api_rejects_forged_payloads(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    job_id = orthanc.add_job("http://127.0.0.1:8001", "Running")
    await service.get(f"/jobs/{job_id}", headers=public())
    url = "/orthanc-jobs/internal/events"
    snapshot = dict(
        orthanc.jobs["http://127.0.0.1:8001"][job_id], State="Failure", Timestamp="20991231T000000"
    )
    cases = {
        401: ({}, {"Incarnation": "inc-1", "Events": []}),
        403: ({"Authorization": "Bearer nope"}, {"Incarnation": "inc-1", "Events": []}),
        404: (plugin(), {"Incarnation": "inc-9", "Events": []}),
    }
    for status, (headers, body) in cases.items():
        assert (await service.post(url, json=body, headers=headers)).status_code == status
    for body in (
        {"Incarnation": "../x", "Events": []},
        [1, 2, 3],
        {"Incarnation": "inc-1", "Events": "x"},
    ):
        answer = await service.post(url, json=body, headers=plugin())
        assert answer.status_code == 400, body
        assert answer.json()["HttpStatus"] == 400
    assert (await service.post(url, content=b"{nope", headers=plugin())).status_code == 400
    assert (await service.post(url, content=b"x" * 5000, headers=plugin())).status_code == 413

    # Events are judged one by one: those that cannot be used are refused with a reason, nothing changes.
    stranger = str(uuid.uuid4())
    refused = [
        {"Type": "JOB_FAILURE", "JobId": stranger, "Job": snapshot},  # the JSON is another job's
        {"Type": "JOB_SUCCESS"},
        {"Type": "NOPE", "JobId": job_id},
        {"Type": "JOB_SUCCESS", "JobId": "../../patients"},
        {"Type": "JOB_SUCCESS", "JobId": job_id, "Job": dict(snapshot, State="Exploded")},
        "not an event",
    ]
    answer = await service.post(url, json={"Incarnation": "inc-1", "Events": refused}, headers=plugin())
    assert answer.status_code == 200
    assert answer.json()["Accepted"] == 0
    assert [r["Index"] for r in answer.json()["Refused"]] == list(range(len(refused)))
    assert all(r["Reason"] for r in answer.json()["Refused"])
    assert (await service.get(f"/jobs/{job_id}", headers=public())).json()["State"] == "Running"
    assert (await service.get(f"/jobs/{stranger}", headers=public())).status_code == 404

    valid = {
        "Incarnation": "inc-1",
        "Url": URL1,
        "Events": [{"Type": "JOB_FAILURE", "JobId": job_id, "Job": snapshot}],
    }
    answer = await service.post(url, content=json.dumps(valid), headers=plugin())
    assert answer.json() == {"Accepted": 1, "Refused": []}
    assert (await service.get(f"/jobs/{job_id}", headers=public())).json()["State"] == "Failure"


async def test_servers_list_and_a_graceful_stop(service: httpx.AsyncClient, orthanc: FakeOrthanc) -> None:
    job_id = orthanc.add_job("http://127.0.0.1:8001", "Running")
    await service.get(f"/jobs/{job_id}", headers=public())
    stop = {"Incarnation": "inc-1", "Events": [{"Type": "ORTHANC_STOPPED"}]}
    assert (
        await service.post("/orthanc-jobs/internal/events", json=stop, headers=plugin())
    ).status_code == 200
    servers = (await service.get("/orthanc-jobs/servers", headers=public())).json()
    assert [(s["Name"], s["Status"]) for s in servers] == [("orthanc-1", "stopped"), ("orthanc-2", "alive")]
    assert servers[0]["Jobs"]["Failure"] == 1
    lost = (await service.get(f"/jobs/{job_id}", headers=public())).json()
    assert lost["State"] == "Failure"
    assert lost["Server"]["Status"] == "stopped"
    assert (await service.post(f"/jobs/{job_id}/resubmit", headers=public())).status_code == 409


async def test_health_needs_no_credentials(service: httpx.AsyncClient) -> None:
    health = (await service.get("/healthz")).json()
    # One service on SQLite is its own leader; it says which replica answers.
    assert health["Status"] == "ok" and health["Leader"] is True and health["Replica"]


async def test_delete_is_forwarded_and_forgets_the_job(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    job_id = orthanc.add_job("http://127.0.0.1:8001", "Success")
    await service.get(f"/jobs/{job_id}", headers=public())
    deleted = await service.delete(f"/jobs/{job_id}", headers=public())
    assert (deleted.status_code, deleted.content) == (200, b"")
    assert [r.method for r in orthanc.requests if r.url.path == f"/jobs/{job_id}"][-1] == "DELETE"
    assert job_id not in (await service.get("/jobs", headers=public())).json()
    assert (await service.get(f"/jobs/{job_id}", headers=public())).status_code == 404


async def test_an_owner_without_delete_refuses_it_and_the_job_stays(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    orthanc.no_delete.add("http://127.0.0.1:8001")
    job_id = orthanc.add_job("http://127.0.0.1:8001", "Success")
    for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/archive"):
        refused = await service.delete(path, headers=public())
        # Orthanc's 405 has an empty body: the caller gets JSON, with the methods the owner allows.
        assert (refused.status_code, refused.headers["allow"]) == (405, "GET")
        assert refused.json()["HttpStatus"] == 405
    assert job_id in (await service.get("/jobs", headers=public())).json()


async def test_orthanc_forms_of_the_listing(service: httpx.AsyncClient, orthanc: FakeOrthanc) -> None:
    job_id = orthanc.add_job("http://127.0.0.1:8001", "Success")
    await service.get(f"/jobs/{job_id}", headers=public())
    assert (await service.get("/jobs/", headers=public())).json() == [job_id]  # a trailing slash
    assert (await service.get("/jobs?status=", headers=public())).json() == [job_id]  # an empty filter
    assert (await service.get("/jobs?type=&server=", headers=public())).json() == [job_id]
    assert (await service.get("/jobs?type=archive", headers=public())).json() == [job_id]  # any case


async def test_a_header_that_is_not_ascii_is_refused_not_a_crash(service: httpx.AsyncClient) -> None:
    answer = await service.get("/jobs", headers={"Authorization": "Basic \u00e9t\u00e9".encode()})
    assert answer.status_code == 401


async def test_the_openapi_description_needs_credentials(service: httpx.AsyncClient) -> None:
    assert (await service.get("/orthanc-jobs/openapi.json")).status_code == 401
    described = (await service.get("/orthanc-jobs/openapi.json", headers=public())).json()
    assert "/jobs/{job_id}" in described["paths"]


@pytest.mark.parametrize(
    "look_alike",
    [
        "http://10.0.0.7:8042.attacker.example",
        "http://10.0.0.7:8042@127.0.0.1:18999",
        "http://user:pw@10.0.0.7:8042",
        "http://10.0.0.7:80429",
        "http://10.0.0.70:8042",
        "https://10.0.0.7:8042",
        "http://10.0.0.7:8042/other",
        "http://10.0.0.7:8042?x=1",
    ],
)
async def test_only_the_declared_servers_may_register_exactly(look_alike: str) -> None:
    """Callers' credentials go to registered servers: a look-alike of a declared URL must not pass, even
    with a secret made for it."""
    settings = Settings(secret=SECRET, database=":memory:", allowed_server_urls="http://10.0.0.7:8042/")
    app = create_app(services=build_services(settings))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as client:
        body = {"Name": "x", "Url": look_alike, "Incarnation": "inc-x", "Token": "Bearer token"}
        secret = hmac.new(SECRET.encode(), look_alike.encode(), "sha256").hexdigest()
        headers = {"Authorization": f"Bearer {secret}", "X-Orthanc-Jobs-Server": look_alike}
        with contextlib.suppress(ValueError):
            headers = plugin(look_alike)
        refused = await client.post("/orthanc-jobs/internal/register", json=body, headers=headers)
        assert refused.status_code == 403, refused.text
        body["Url"] = "HTTP://10.0.0.7:8042"  # the declared one, spelt otherwise
        accepted = await client.post(
            "/orthanc-jobs/internal/register", json=body, headers=plugin(body["Url"])
        )
        assert accepted.status_code == 200


async def test_one_servers_secret_cannot_speak_for_another(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    """A secret leaked from orthanc-1 cannot register orthanc-2's URL, send its heartbeats, or stop it."""
    url2 = "http://127.0.0.1:8002"
    registration = {"Name": "forged", "Url": url2, "Incarnation": "forged-2", "Token": "Bearer stolen"}
    beat = {"Incarnation": "inc-2"}
    stop = {"Incarnation": "inc-2", "Events": [{"Type": "ORTHANC_STOPPED"}]}
    for forged in (plugin(url2, secret_of=URL1), plugin(URL1)):  # orthanc-2 named, or orthanc-1 speaking
        for route, body in (("register", registration), ("heartbeat", beat), ("events", stop)):
            answer = await service.post(f"/orthanc-jobs/internal/{route}", json=body, headers=forged)
            assert answer.status_code == 403, (route, forged, answer.text)
    servers = (await service.get("/orthanc-jobs/servers", headers=public())).json()
    assert [(s["Name"], s["Status"], s["Incarnation"]) for s in servers] == [
        ("orthanc-1", "alive", "inc-1"),
        ("orthanc-2", "alive", "inc-2"),
    ]


async def test_the_orthanc_version_can_come_with_a_heartbeat(service: httpx.AsyncClient) -> None:
    beat = {"Incarnation": "inc-1", "OrthancVersion": "1.10.1"}
    assert (
        await service.post("/orthanc-jobs/internal/heartbeat", json=beat, headers=plugin())
    ).status_code == 200
    servers = (await service.get("/orthanc-jobs/servers", headers=public())).json()
    assert [s["OrthancVersion"] for s in servers] == ["1.10.1", ""]


async def test_metrics_health_and_readiness_need_no_credentials(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    job_id = orthanc.add_job("http://127.0.0.1:8001", "Running")
    await service.get(f"/jobs/{job_id}", headers=public())
    event = {"Type": "JOB_SUBMITTED", "JobId": job_id, "Time": time.time() - 0.01}
    body = {"Incarnation": "inc-1", "Events": [event]}
    assert (
        await service.post("/orthanc-jobs/internal/events", json=body, headers=plugin())
    ).status_code == 200
    text = (await service.get("/metrics")).text
    assert 'orthanc_jobs_jobs{server="orthanc-1",state="Running",type="Archive"} 1.0' in text
    assert 'orthanc_jobs_server_up{server="orthanc-2"} 1.0' in text
    assert 'orthanc_jobs_events_received_total{type="JOB_SUBMITTED"} 1.0' in text
    assert "orthanc_jobs_event_lag_seconds_count 1.0" in text
    assert job_id not in text  # no job data
    assert (await service.get("/healthz")).status_code == 200
    assert (await service.get("/readyz")).status_code == 503  # the lifespan has not run in this test


async def test_stats_count_finished_jobs_per_server(service: httpx.AsyncClient, orthanc: FakeOrthanc) -> None:
    for state in ("Success", "Success", "Failure"):
        job_id = orthanc.add_job("http://127.0.0.1:8002", state)
        await service.get(f"/jobs/{job_id}", headers=public())
    stats = (await service.get("/orthanc-jobs/stats?bucket=60&window=600", headers=public())).json()
    assert stats["Bucket"] == 60
    assert set(stats["Servers"]) == {"orthanc-1", "orthanc-2"}
    totals = {
        name: (sum(b["Success"] for b in series), sum(b["Failure"] for b in series))
        for name, series in stats["Servers"].items()
    }
    assert totals == {"orthanc-1": (0, 0), "orthanc-2": (2, 1)}
    assert (await service.get("/orthanc-jobs/stats?bucket=1", headers=public())).status_code == 400


async def test_the_dashboard_is_served_with_credentials_only(service: httpx.AsyncClient) -> None:
    assert (await service.get("/orthanc-jobs/ui/")).status_code == 401
    page = await service.get("/orthanc-jobs/ui/", headers=public())
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert (await service.get("/orthanc-jobs/ui/app.js", headers=public())).status_code == 200
    assert (await service.get("/orthanc-jobs/ui/../config.py", headers=public())).status_code == 404
    assert (await service.get("/orthanc-jobs/ui/secret.txt", headers=public())).status_code == 404


@asynccontextmanager
async def on_a_history_file(orthanc: FakeOrthanc, store: SqliteStore) -> AsyncIterator[httpx.AsyncClient]:
    """The service on a history file, orthanc-1 registered; without its lifespan, so that no periodic write
    runs behind the routes' back."""
    services = build_services(
        Settings(secret=SECRET, database=":memory:"),
        store=store,
        client=OrthancClient(5, transport=httpx.MockTransport(orthanc.handler)),
    )
    app = create_app(services=services)
    registration = {"Name": "orthanc-1", "Url": "http://127.0.0.1:8001", "Incarnation": "inc-1", "Token": "t"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as client:
        assert (
            await client.post("/orthanc-jobs/internal/register", json=registration, headers=plugin())
        ).is_success
        yield client


def one_success(job_id: str) -> dict[str, Any]:
    snapshot = {"ID": job_id, "State": "Success", "Type": "Archive", "Timestamp": "20261128T100000.000000"}
    return {
        "Incarnation": "inc-1",
        "Url": URL1,
        "Events": [{"Type": "JOB_SUCCESS", "JobId": job_id, "Job": snapshot}],
    }


def stored_jobs(database: str) -> list[tuple[str, str]]:
    """What another process reads in the history file (as one would after a kill -9)."""
    with sqlite3.connect(database) as other_process:
        rows = other_process.execute("SELECT id, content FROM jobs").fetchall()
    return [(row[0], json.loads(row[1])["State"]) for row in rows]


async def test_events_are_in_the_store_when_the_plugin_gets_its_answer(
    orthanc: FakeOrthanc, tmp_path: Path
) -> None:
    """An event answered 200 survives a crash of the job-service (kill -9) that comes right after."""
    database = str(tmp_path / "history.sqlite3")
    job_id = str(uuid.uuid4())
    async with on_a_history_file(orthanc, SqliteStore(database)) as client:
        answer = await client.post(
            "/orthanc-jobs/internal/events", json=one_success(job_id), headers=plugin()
        )

        assert answer.json() == {"Accepted": 1, "Refused": []}
        assert stored_jobs(database) == [(job_id, "Success")]


async def test_a_job_its_owner_cannot_write_is_answered_as_its_owner_answers(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    """An asynchronous archive of nothing, pending: Orthanc answers 400 for it. So does the cluster, and
    actions on it reach its owner, as on one Orthanc."""
    job_id = orthanc.add_job("http://127.0.0.1:8002", "Pending")
    orthanc.unwritable.add(job_id)

    answer = await service.get(f"/jobs/{job_id}", headers=public())
    assert answer.status_code == 400
    assert answer.json()["HttpStatus"] == 400

    assert (await service.post(f"/jobs/{job_id}/cancel", headers=public())).json() == {}
    assert orthanc.jobs["http://127.0.0.1:8002"][job_id]["State"] == "Failure"
    assert (await service.get(f"/jobs/{uuid.uuid4()}", headers=public())).status_code == 404


async def test_events_the_history_cannot_take_are_refused_503_and_kept_for_the_retry(
    orthanc: FakeOrthanc, tmp_path: Path
) -> None:
    class FailingOnce(SqliteStore):
        failures = 1

        def write(self, pending: Pending) -> None:
            if self.failures:
                self.failures -= 1
                raise sqlite3.OperationalError("disk I/O error")
            super().write(pending)

    database = str(tmp_path / "history.sqlite3")
    job_id = str(uuid.uuid4())
    async with on_a_history_file(orthanc, FailingOnce(database)) as client:
        refused = await client.post(
            "/orthanc-jobs/internal/events", json=one_success(job_id), headers=plugin()
        )
        assert refused.status_code == 503
        assert "cannot be written" in refused.json()["Message"]
        again = await client.post("/orthanc-jobs/internal/events", json=one_success(job_id), headers=plugin())
        assert again.json() == {"Accepted": 1, "Refused": []}

        assert stored_jobs(database) == [(job_id, "Success")]


async def test_a_heartbeat_the_history_cannot_take_is_seen_and_answered_503(
    orthanc: FakeOrthanc, tmp_path: Path
) -> None:
    """Other replicas would not hear of it: 503 sends the plugin's heartbeats to one that can tell them."""

    class Failing(SqliteStore):
        def write(self, pending: Pending) -> None:
            raise sqlite3.OperationalError("disk I/O error")

    async with on_a_history_file(orthanc, Failing(str(tmp_path / "history.sqlite3"))) as client:
        await client.post(
            "/orthanc-jobs/internal/events", json=one_success(str(uuid.uuid4())), headers=plugin()
        )
        beat = await client.post(
            "/orthanc-jobs/internal/heartbeat", json={"Incarnation": "inc-1"}, headers=plugin()
        )
        assert beat.status_code == 503 and "cannot share heartbeats" in beat.json()["Message"]
        servers = await client.get("/orthanc-jobs/servers", headers=public())
        assert [server["Status"] for server in servers.json()] == ["alive"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 200),  # a script, an Orthanc client: neither header
        ({"Sec-Fetch-Site": "same-origin", "Origin": "http://service"}, 200),  # the dashboard
        ({"Origin": "http://service"}, 200),  # an older browser, same site
        ({"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"}, 403),  # a form on another site
        ({"Sec-Fetch-Site": "same-site", "Origin": "http://service:9999"}, 403),
        ({"Origin": "http://evil.example"}, 403),  # an older browser, another site
        ({"Origin": "null"}, 403),  # a sandboxed page
    ],
)
async def test_actions_from_a_page_of_another_site_are_refused(
    service: httpx.AsyncClient, orthanc: FakeOrthanc, headers: dict[str, str], status: int
) -> None:
    job_id = orthanc.add_job("http://127.0.0.1:8001", "Running")
    answer = await service.post(f"/jobs/{job_id}/pause", headers=public(**headers))
    assert answer.status_code == status
    paused = orthanc.jobs["http://127.0.0.1:8001"][job_id]["State"] == "Paused"
    assert paused == (status == 200)
    if status == 403:
        assert answer.json()["HttpStatus"] == 403
    # Reading is not changing: allowed from anywhere the credentials are.
    assert (await service.get(f"/jobs/{job_id}", headers=public(**headers))).status_code == 200


async def test_every_answer_forbids_framing_sniffing_and_foreign_content(service: httpx.AsyncClient) -> None:
    page = await service.get("/orthanc-jobs/ui/", headers=public())
    data = await service.get("/jobs", headers=public())
    refused = await service.get("/jobs")
    for answer in (page, data, refused):
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert data.headers["Content-Security-Policy"].startswith("default-src 'none'")


async def test_events_that_arrive_late_or_out_of_order_never_move_a_job_backwards(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    """Orthanc 1.12.2 queues job events to plugins and delivers them asynchronously: a JOB_SUBMITTED may
    come after the job's JOB_SUCCESS, with the JSON read when the job was still pending, or without JSON."""
    job_id = str(uuid.uuid4())

    def event(kind: str, state: str | None, stamp: str) -> dict[str, Any]:
        body: dict[str, Any] = {"Type": kind, "JobId": job_id}
        if state is not None:
            body["Job"] = {"ID": job_id, "State": state, "Type": "Archive", "Timestamp": stamp}
        return body

    async def send(*events: dict[str, Any]) -> None:
        answer = await service.post(
            "/orthanc-jobs/internal/events",
            json={"Incarnation": "inc-1", "Events": list(events)},
            headers=plugin(),
        )
        assert answer.json()["Refused"] == []

    await send(event("JOB_SUCCESS", "Success", "20261128T100002.000000"))
    await send(event("JOB_SUBMITTED", "Pending", "20261128T100000.000000"))  # late, with its older JSON
    await send(event("JOB_SUBMITTED", None, ""))  # late, its JSON not read
    await send(event("JOB_SUBMITTED", "Running", "20261128T100001.000000"), event("JOB_FAILURE", None, ""))

    job = (await service.get(f"/jobs/{job_id}", headers=public())).json()
    assert job["State"] == "Success" and job["Timestamp"] == "20261128T100002.000000"


async def test_readiness_asks_a_few_servers_not_each_of_hundreds() -> None:
    """One server answering is enough to be ready; a probe costs at most READY_SAMPLE requests."""
    from orthanc_jobs.api.service import READY_SAMPLE, _readiness

    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(200 if request.url.port == 9005 else 503, json={"Version": "1.12.7"})

    settings = Settings(secret=SECRET, database=":memory:")
    services = build_services(settings, client=OrthancClient(5, transport=httpx.MockTransport(handler)))
    for port in range(9000, 9200):
        services.registry.register_server(
            name=f"orthanc-{port}", url=f"http://127.0.0.1:{port}", incarnation=f"inc-{port}", token="t"
        )
    answers = [await _readiness(services) for _ in range(40)]
    assert len(asked) == 40 * READY_SAMPLE
    assert all(body["Servers"] == 200 and body["Asked"] == READY_SAMPLE for _, body in answers)
    # Whoever was asked: ready only when the one server that answers was among them.
    for (status, body), round_start in zip(answers, range(0, len(asked), READY_SAMPLE), strict=True):
        answered = any(":9005/" in url for url in asked[round_start : round_start + READY_SAMPLE])
        assert (status == 200) == answered and body.get("Reachable", 0) == int(answered)

    # Starting, a server whose jobs were just listed answered the service: ready without asking anyone;
    # once ready, every probe asks again.
    services.was_ready = False
    asked.clear()
    services.registry.mark_resynchronised(services.registry.live_servers()[7])
    ready = {"Status": "ready", "Servers": 200, "Asked": 0, "Reachable": 1}
    assert await _readiness(services) == (200, ready)
    assert asked == []
    await _readiness(services)
    assert len(asked) == READY_SAMPLE
    await services.client.aclose()

"""``/orthanc-jobs/actions``: one action on every job a filter matches, planned, confirmed, run at a bound
rate through the owners, with a result per job."""

import asyncio
from typing import Any

import httpx
import orjson

from orthanc_jobs.api.fast import JobServiceApp
from tests.unit.api.conftest import URL1, public
from tests.unit.fake_orthanc import FakeOrthanc

URL2 = "http://127.0.0.1:8002"
ACTIONS = "/orthanc-jobs/actions"


async def _known(service: httpx.AsyncClient, *job_ids: str) -> None:
    """Make the service read the jobs (as a client reading them by id would)."""
    for job_id in job_ids:
        assert (await service.get(f"/jobs/{job_id}", headers=public())).status_code == 200


async def _finished(service: httpx.AsyncClient, path: str) -> dict[str, Any]:
    for _ in range(200):
        answer = (await service.get(path, headers=public())).json()
        if answer["State"] != "Running":
            return answer  # type: ignore[no-any-return]
        await asyncio.sleep(0.02)
    raise AssertionError(f"still running: {answer}")


async def test_a_dry_run_counts_and_explains_and_sends_nothing(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    failed = [
        orthanc.add_job(URL1, "Failure"),
        orthanc.add_job(URL1, "Failure"),
        orthanc.add_job(URL2, "Failure"),
    ]
    done = orthanc.add_job(URL2, "Success")
    await _known(service, *failed, done)
    sent = len(orthanc.requests)
    body = {"Action": "resubmit", "Filter": {"status": ["Failure", "Success"]}, "DryRun": True}
    answer = await service.post(ACTIONS, json=body, headers=public())
    assert answer.status_code == 200, answer.text
    summary = answer.json()
    assert (summary["Matching"], summary["Accepted"], summary["Refused"], summary["DryRun"]) == (
        4,
        3,
        1,
        True,
    )
    [refused] = summary["RefusedJobs"]
    assert refused["ID"] == done and "Success" in refused["Reason"] and "Failure" in refused["Reason"]
    assert summary["RefusedReasons"] == [{"Reason": refused["Reason"], "Count": 1}]
    assert len(orthanc.requests) == sent  # nothing asked of the servers

    only_one = {"Action": "resubmit", "Filter": {"status": "Failure", "server": "orthanc-2"}, "DryRun": True}
    assert (await service.post(ACTIONS, json=only_one, headers=public())).json()["Accepted"] == 1


async def test_a_run_goes_through_the_owners_with_a_result_per_job(
    service: httpx.AsyncClient, orthanc: FakeOrthanc, service_app: JobServiceApp
) -> None:
    failed = [orthanc.add_job(URL1, "Failure") for _ in range(3)] + [orthanc.add_job(URL2, "Failure")]
    await _known(service, *failed)
    orthanc.down.add(URL2)
    events = service_app.state.services.events
    stream = events.subscribe()
    body = {"Action": "resubmit", "Filter": {"status": "Failure"}, "Expected": 4}
    answer = await service.post(ACTIONS, json=body, headers=public())
    assert answer.status_code == 202, answer.text
    started = answer.json()
    assert answer.headers["location"] == started["Path"] and started["Accepted"] == 4
    final = await _finished(service, started["Path"])
    assert (final["State"], final["Total"], final["Done"], final["Unreachable"]) == ("Done", 4, 3, 1)
    results = {result["ID"]: result for result in final["Results"]}
    assert results[failed[3]]["Result"] == "unreachable" and "did not answer" in results[failed[3]]["Reason"]
    for job_id in failed[:3]:
        assert results[job_id] == {"ID": job_id, "Result": "done", "HttpStatus": 200, "Reason": ""}
        # Resubmitted on its owner, with the caller's credentials, and read back.
        assert orthanc.jobs[URL1][job_id]["State"] == "Pending"
        assert (await service.get(f"/jobs/{job_id}", headers=public())).json()["State"] == "Pending"
    posts = [r for r in orthanc.requests if r.method == "POST" and r.url.path.endswith("/resubmit")]
    assert {r.headers["authorization"] for r in posts} == {public()["Authorization"]}

    # Its progress went on the event stream, the last event with every result.
    told = []
    while not stream.empty():
        event = stream.get_nowait()
        if event is not None and event.kind == "action":
            told.append(orjson.loads(event.data))
    events.unsubscribe(stream)
    assert told[0]["State"] == "Running" and told[-1]["State"] == "Done"
    assert len(told[-1]["Results"]) == 4 and all(entry["ID"] == started["ID"] for entry in told)
    listed = (await service.get(ACTIONS, headers=public())).json()
    assert [entry["ID"] for entry in listed] == [started["ID"]] and "Results" not in listed[0]


async def test_a_job_that_moved_since_the_plan_is_refused_by_its_owner_or_the_state(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    job_id = orthanc.add_job(URL1, "Failure")
    await _known(service, job_id)
    orthanc.jobs[URL1][job_id]["State"] = "Success"  # Orthanc knows better than the registry, for a moment
    answer = await service.post(
        ACTIONS, json={"Action": "resubmit", "Filter": {"ids": job_id}}, headers=public()
    )
    final = await _finished(service, answer.json()["Path"])
    [result] = final["Results"]
    assert (result["Result"], result["HttpStatus"], result["Reason"]) == (
        "refused",
        400,
        "Bad sequence of calls",
    )


async def test_delete_is_refused_for_an_orthanc_without_it(
    service: httpx.AsyncClient, orthanc: FakeOrthanc, service_app: JobServiceApp
) -> None:
    job_id = orthanc.add_job(URL1, "Success")
    await _known(service, job_id)
    server = service_app.state.services.registry.server_by_url(URL1)
    body = {"Action": "delete", "Filter": {"ids": [job_id]}, "DryRun": True}
    for version, accepted in [("1.10.1", 0), ("1.12.1", 0), ("1.12.2", 1), ("1.12.10", 1), ("mainline", 1)]:
        server.orthanc_version = version
        summary = (await service.post(ACTIONS, json=body, headers=public())).json()
        assert summary["Accepted"] == accepted, version
        if not accepted:
            assert "DELETE /jobs/{id} needs 1.12.2" in summary["RefusedJobs"][0]["Reason"]


async def test_bad_requests_are_refused_with_a_reason(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    job_id = orthanc.add_job(URL1, "Failure")
    await _known(service, job_id)
    bad: list[tuple[Any, int, str]] = [
        (b"not json", 400, "not JSON"),
        (b"[]", 400, "JSON object"),
        ({"Action": "explode", "Filter": {"status": "Failure"}}, 400, "Action"),
        ({"Action": "cancel"}, 400, "Filter"),
        ({"Action": "cancel", "Filter": {}}, 400, "Filter"),
        ({"Action": "cancel", "Filter": {"status": ""}}, 400, "every value given was empty"),
        ({"Action": "cancel", "Filter": {"type": "", "server": ",", "ids": [], "q": " "}}, 400, "empty"),
        ({"Action": "cancel", "Filter": {"status": "Bogus"}}, 400, "unknown job state"),
        ({"Action": "cancel", "Filter": {"status": "Failure"}, "Force": True}, 400, "unknown field"),
        ({"Action": "cancel", "Filter": {"status": "Failure"}, "DryRun": "yes"}, 400, "DryRun"),
        ({"Action": "resubmit", "Filter": {"status": "Failure"}, "Expected": 2}, 409, "not the 2 expected"),
    ]
    for body, status, words in bad:
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        answer = await service.post(ACTIONS, content=content, headers=public())
        assert answer.status_code == status, (body, answer.text)
        assert words in answer.json()["Message"], (body, answer.json())
    assert orthanc.jobs[URL1][job_id]["State"] == "Failure"  # nothing was done
    answer = await service.post(ACTIONS, json={"Action": "resubmit", "Filter": {"status": "Failure"}})
    assert answer.status_code == 401
    unknown = await service.get(f"{ACTIONS}/00000000-0000-4000-8000-000000000000", headers=public())
    assert unknown.status_code == 404 and "no action" in unknown.json()["Message"]

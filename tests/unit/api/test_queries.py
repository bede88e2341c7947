"""/queries for the cluster: a query handle's requests go to the server whose process ran the query."""

import asyncio
import uuid

import httpx

from tests.unit.api.conftest import public
from tests.unit.fake_orthanc import GOOD, FakeOrthanc

URL2 = "http://127.0.0.1:8002"


def asked(orthanc: FakeOrthanc, path: str, url: str | None = None) -> list[httpx.Request]:
    return [
        r
        for r in orthanc.requests
        if r.url.path == path and (url is None or f"{r.url.scheme}://{r.url.host}:{r.url.port}" == url)
    ]


async def test_a_query_s_requests_go_to_the_server_that_ran_it(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    query_id = orthanc.add_query(URL2, answers=3)
    answer = await service.get(f"/queries/{query_id}/answers", headers=public())
    assert (answer.status_code, answer.json()) == (200, ["0", "1", "2"])
    forwarded = asked(orthanc, f"/queries/{query_id}/answers")
    assert len(forwarded) == 1 and str(forwarded[0].url).startswith(URL2)
    assert forwarded[0].headers["authorization"] == GOOD  # the caller's own credentials

    # The query string goes on unchanged; the owner is remembered: no second lookup.
    expanded = await service.get(f"/queries/{query_id}/answers?expand&simplify", headers=public())
    assert expanded.json() == orthanc.queries[URL2][query_id]
    assert asked(orthanc, f"/queries/{query_id}/answers")[-1].url.query == b"expand&simplify"
    assert len(asked(orthanc, "/queries")) == 2  # one round, on each server, for the first request only


async def test_a_retrieve_makes_a_job_of_the_owner_that_the_cluster_follows(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    query_id = orthanc.add_query(URL2)
    body = b'{"TargetAet": "ORTHANC2", "Synchronous": false}'
    answer = await service.post(
        f"/queries/{query_id}/retrieve",
        content=body,
        headers=public(**{"Content-Type": "application/json"}),
    )
    assert answer.status_code == 200
    job_id = answer.json()["ID"]
    assert answer.json()["Path"] == f"/jobs/{job_id}"
    sent = asked(orthanc, f"/queries/{query_id}/retrieve")[0]
    assert (sent.content, sent.headers["content-type"]) == (body, "application/json")
    job = (await service.get(f"/jobs/{job_id}", headers=public())).json()
    assert job["Server"]["Name"] == "orthanc-2"


async def test_a_query_made_from_an_answer_is_known_at_once(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    query_id = orthanc.add_query(URL2)
    made = (await service.post(f"/queries/{query_id}/answers/0/query-studies", headers=public())).json()
    rounds = len(asked(orthanc, "/queries"))
    assert (await service.get(f"/queries/{made['ID']}", headers=public())).status_code == 200
    assert len(asked(orthanc, "/queries")) == rounds  # no lookup: its server said it ran it


async def test_unknown_and_malformed_ids_are_404_in_orthanc_s_shape(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    unknown = str(uuid.uuid4())
    for path in (f"/queries/{unknown}", f"/queries/{unknown}/answers", "/queries/not-a-query/answers"):
        answer = await service.get(path, headers=public())
        assert answer.status_code == 404, path
        assert answer.json()["OrthancStatus"] == 17 and answer.json()["HttpStatus"] == 404
    assert not [r for r in orthanc.requests if "not-a-query" in r.url.path]  # never forwarded
    query_id = orthanc.add_query(URL2)
    for tail in ("answers/%2e%2e", "answers/%2E%2E/x", "a%20b", "answers/0/content;x", "a/b/c/d/e/f/g/h"):
        answer = await service.get(f"/queries/{query_id}/{tail}", headers=public())
        assert answer.status_code in (400, 404), tail
        assert answer.headers["content-type"] == "application/json"
    assert not [r for r in orthanc.requests if ".." in r.url.path or ";" in r.url.path]


async def test_concurrent_requests_for_a_new_query_share_one_lookup(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    query_id = orthanc.add_query(URL2)
    answers = await asyncio.gather(
        *(service.get(f"/queries/{query_id}/answers", headers=public()) for _ in range(20))
    )
    assert {a.status_code for a in answers} == {200}
    assert len(asked(orthanc, "/queries", URL2)) == 1


async def test_the_listing_has_every_server_s_handles(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    first, second = orthanc.add_query("http://127.0.0.1:8001"), orthanc.add_query(URL2)
    listed = await service.get("/queries", headers=public())
    assert sorted(listed.json()) == sorted([first, second])
    orthanc.down.add(URL2)  # a server that does not answer has no handle to offer
    assert (await service.get("/queries", headers=public())).json() == [first]


async def test_a_deleted_query_is_forgotten(service: httpx.AsyncClient, orthanc: FakeOrthanc) -> None:
    query_id = orthanc.add_query(URL2)
    assert (await service.delete(f"/queries/{query_id}", headers=public())).json() == {}
    rounds = len(asked(orthanc, "/queries"))
    assert (await service.get(f"/queries/{query_id}", headers=public())).status_code == 404
    assert len(asked(orthanc, "/queries")) == rounds + 2  # looked up again, on each server: no owner kept
    assert asked(orthanc, f"/queries/{query_id}")[-1].method == "DELETE"  # not asked of its old owner


async def test_credentials_and_cross_site_requests(service: httpx.AsyncClient, orthanc: FakeOrthanc) -> None:
    query_id = orthanc.add_query(URL2)
    assert (await service.get(f"/queries/{query_id}/answers")).status_code == 401
    assert (await service.get("/queries")).status_code == 401
    forged = public(Origin="http://evil.example", **{"Sec-Fetch-Site": "cross-site"})
    assert (await service.post(f"/queries/{query_id}/retrieve", headers=forged)).status_code == 403
    assert asked(orthanc, f"/queries/{query_id}/retrieve") == []


async def test_an_owner_that_does_not_answer_is_a_503(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    query_id = orthanc.add_query(URL2)
    assert (await service.get(f"/queries/{query_id}", headers=public())).status_code == 200
    orthanc.down.add(URL2)
    answer = await service.get(f"/queries/{query_id}/answers", headers=public())
    assert answer.status_code == 503 and answer.json()["HttpStatus"] == 503

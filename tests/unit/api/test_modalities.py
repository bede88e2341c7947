"""Modalities declared through the job-service reach every server; what runs under them goes to one."""

import httpx

from tests.unit.api.conftest import public
from tests.unit.fake_orthanc import FakeOrthanc

PACS = {"AET": "PACS", "Host": "127.0.0.1", "Port": 4242}
SERVERS = ["http://127.0.0.1:8001", "http://127.0.0.1:8002"]


async def test_a_modality_declared_once_is_known_to_every_server(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    answer = await service.put("/modalities/pacs", json=PACS, headers=public())
    assert (answer.status_code, answer.json()) == (200, {})
    assert [orthanc.modalities[url].get("pacs") for url in SERVERS] == [PACS, PACS]
    assert (await service.get("/modalities", headers=public())).json() == ["pacs"]
    assert (await service.get("/modalities/pacs", headers=public())).json() == PACS
    assert (await service.delete("/modalities/pacs", headers=public())).status_code == 200
    assert [orthanc.modalities[url] for url in SERVERS] == [{}, {}]


async def test_a_server_that_misses_a_declaration_makes_it_a_503_to_send_again(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    orthanc.down.add(SERVERS[1])
    missed = await service.put("/modalities/pacs", json=PACS, headers=public())
    assert missed.status_code == 503 and "orthanc-2" in missed.json()["Message"]
    orthanc.down.clear()
    assert (await service.put("/modalities/pacs", json=PACS, headers=public())).status_code == 200
    assert [orthanc.modalities[url].get("pacs") for url in SERVERS] == [PACS, PACS]


async def test_a_query_of_a_modality_is_remembered_where_it_ran(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    await service.put("/modalities/pacs", json=PACS, headers=public())
    made = []
    for _ in range(4):  # one server, then the other, in turn
        answer = await service.post("/modalities/pacs/query", json={"Level": "Study"}, headers=public())
        assert answer.status_code == 200
        made.append(answer.json()["ID"])
    owners = {url for url in SERVERS for query_id in made if query_id in orthanc.queries[url]}
    assert owners == set(SERVERS)
    for query_id in made:
        assert (await service.get(f"/queries/{query_id}/answers", headers=public())).status_code == 200
    assert [r for r in orthanc.requests if r.url.path == "/queries"] == []  # no lookup was needed


async def test_bad_names_and_paths_are_refused_before_anything_is_sent(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    for path in ("/modalities/a%01b", "/modalities/pacs/query%3Bx", "/peers/x/a/b/c/d/e"):
        answer = await service.put(path, json=PACS, headers=public())
        assert answer.status_code in (400, 405), path
    assert (await service.get("/modalities/a%01b", headers=public())).status_code == 400
    assert [r for r in orthanc.requests if "a\x01b" in r.url.path or "%01" in str(r.url)] == []
    assert (await service.put("/modalities/pacs", json=PACS)).status_code == 401


async def test_removing_what_only_some_servers_have_removes_it_from_them(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    orthanc.modalities[SERVERS[1]]["lonely"] = PACS  # declared on orthanc-2 alone, around the job-service
    assert (await service.delete("/modalities/lonely", headers=public())).status_code == 200
    assert orthanc.modalities[SERVERS[1]] == {}
    assert (await service.delete("/modalities/lonely", headers=public())).status_code == 404  # on none

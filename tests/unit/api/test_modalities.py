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
    await service.put("/modalities/pacs", json=PACS, headers=public())
    sent = len(orthanc.requests)
    # A name is letters, digits, '-' and '_' (as Orthanc's): no name is a path once forwarded.
    for path in ("/modalities/%2E%2E", "/modalities/%2E", "/modalities/a%01b", "/peers/a%20b"):
        for method in ("GET", "PUT", "DELETE"):
            answer = await service.request(method, path, headers=public())
            assert answer.status_code == 400, (method, path)
            assert answer.json()["HttpStatus"] == 400
    for path in (
        "/modalities/pacs/query%3Bx",
        "/peers/x/a/b/c/d/e",
        "/modalities/%2E%2E/tools/execute-script",
    ):
        answer = await service.post(path, json={}, headers=public())
        assert answer.status_code == 400, path
    assert len(orthanc.requests) == sent  # nothing of it reached a server
    assert (await service.put("/modalities/pacs", json=PACS)).status_code == 401


async def test_a_dicom_file_sent_straight_is_streamed_past_the_body_limit(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    await service.put("/modalities/pacs", json=PACS, headers=public())
    dicom = b"\0" * 65536  # more than this service's limit of 4096 bytes for other bodies
    answer = await service.post("/modalities/pacs/store-straight", content=dicom, headers=public())
    assert (answer.status_code, answer.json()) == (200, {"Bytes": len(dicom)})
    refused = await service.post("/modalities/pacs/query", content=dicom, headers=public())
    assert refused.status_code == 413


async def test_removing_what_only_some_servers_have_removes_it_from_them(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    orthanc.modalities[SERVERS[1]]["lonely"] = PACS  # declared on orthanc-2 alone, around the job-service
    assert (await service.delete("/modalities/lonely", headers=public())).status_code == 200
    assert orthanc.modalities[SERVERS[1]] == {}
    assert (await service.delete("/modalities/lonely", headers=public())).status_code == 404  # on none

"""The one reading of a job filter: from the listing's query parameters and from a bulk action's JSON, each
mistake a 400 that names the filter."""

import httpx
import pytest

from orthanc_jobs.api.filters import FILTER_NAMES, job_query_from_json, parse_job_query
from orthanc_jobs.core.errors import BadRequest
from orthanc_jobs.core.filters import EVERY_JOB, JobQuery, ResourceSearch, TextSearch, TimeRange
from orthanc_jobs.core.registry import Registry
from tests.unit.api.conftest import public
from tests.unit.fake_orthanc import FakeOrthanc, registry_of

URL1, URL2 = "http://127.0.0.1:8001", "http://127.0.0.1:8002"
JOB_A = "11111111-1111-1111-1111-111111111111"
JOB_B = "22222222-2222-2222-2222-222222222222"
STUDY = "b9c08539-26f93bde-c81ab0d7-bffaf2cb-a4d0bdd0"


@pytest.fixture
def registry() -> Registry:
    return registry_of([URL1, URL2])


def test_every_filter_is_read_by_its_parameter_name(registry: Registry) -> None:
    params = {
        "status": ["failure,Success"],
        "type": ["DicomModalityStore", "archive"],
        "server": ["orthanc-2"],
        "ids": [f"{JOB_A},{JOB_B.upper()}"],
        "created-since": ["2025-01-01"],
        "created-until": ["20250131T235959"],
        "completed-since": ["2025-01-01T12:00:00+01:00"],
        "completed-until": [""],
        "q": ["  nightly copy "],
        "resource": [STUDY],
        "limit": ["not read here"],
    }
    assert parse_job_query(registry, params) == JobQuery(
        states=frozenset({"Failure", "Success"}),
        types=frozenset({"dicommodalitystore", "archive"}),
        server_urls=frozenset({URL2}),
        ids=frozenset({JOB_A, JOB_B}),
        created=TimeRange("20250101T000000", "20250201T000000"),
        completed=TimeRange("20250101T110000", None),
        text=TextSearch("nightly copy"),
        resource=ResourceSearch(STUDY),
    )
    assert parse_job_query(registry, {}) == EVERY_JOB
    assert parse_job_query(registry, {name: [""] for name in FILTER_NAMES}) == EVERY_JOB  # empty: no filter


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"status": ["Exploded"]}, "unknown job state 'Exploded'"),
        ({"ids": [f"{JOB_A},nope"]}, "ids: 'nope' is not a job id"),
        ({"created-since": ["yesterday"]}, "created-since/created-until: 'yesterday' is not a time"),
        ({"completed-until": ["2025-02-30"]}, "completed-since/completed-until: '2025-02-30' is no such day"),
        (
            {"created-since": ["2025-02-01"], "created-until": ["2025-01-01"]},
            "'2025-02-01' is after '2025-01-01'",
        ),
        ({"created-since": ["2025-01-01", "2025-02-01"]}, "created-since: one value, not 2"),
        ({"q": ["a", "b"]}, "q: one value, not 2"),
        ({"resource": ["b9c08539"]}, "resource: 'b9c08539' is not an Orthanc resource id"),
    ],
)
def test_each_mistake_is_a_bad_request_naming_the_filter(
    registry: Registry, params: dict[str, list[str]], message: str
) -> None:
    with pytest.raises(BadRequest) as raised:
        parse_job_query(registry, params)
    assert message in raised.value.message


def test_a_json_filter_takes_strings_or_lists_by_the_same_names(registry: Registry) -> None:
    body = {"status": ["Failure"], "type": "DicomModalityStore", "created-since": "2025-01-01"}
    assert job_query_from_json(registry, body) == parse_job_query(
        registry, {"status": ["Failure"], "type": ["DicomModalityStore"], "created-since": ["2025-01-01"]}
    )
    assert job_query_from_json(registry, {}) == EVERY_JOB


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (["status"], "a filter is a JSON object"),
        ({"state": "Failure", "Status": "x"}, "unknown filter Status, state; filters are status, type"),
        ({"status": 3}, "filter status: a string or a list of strings, not int"),
        ({"ids": [JOB_A, None]}, "filter ids: a string or a list of strings, not list"),
        ({"q": {"text": "x"}}, "filter q: a string or a list of strings, not dict"),
        ({"created-until": "never"}, "'never' is not a time"),
    ],
)
def test_a_json_filter_that_cannot_be_read_is_a_bad_request(
    registry: Registry, body: object, message: str
) -> None:
    with pytest.raises(BadRequest) as raised:
        job_query_from_json(registry, body)
    assert message in raised.value.message


async def _known(service: httpx.AsyncClient, orthanc: FakeOrthanc, url: str, **fields: object) -> str:
    """A job of the server at ``url`` with these fields, known to the service."""
    job_id = orthanc.add_job(
        url, str(fields.pop("State", "Success")), str(fields.pop("CreationTime", "20261128T100000.000000"))
    )
    orthanc.jobs[url][job_id].update(fields)
    assert (await service.get(f"/jobs/{job_id}", headers=public())).status_code == 200
    return job_id


async def test_the_listing_searches_with_every_filter(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    ward = await _known(
        service,
        orthanc,
        URL1,
        CreationTime="20261128T090000.000000",
        Content={"Description": "Ward 7, nightly"},
    )
    study = await _known(
        service,
        orthanc,
        URL2,
        State="Failure",
        CreationTime="20261128T100000.000000",
        CompletionTime="20261128T100500.000000",
        ErrorDescription="Error in the network protocol",
        Content={"Resources": [STUDY]},
    )
    running = await _known(service, orthanc, URL2, State="Running", CreationTime="20261128T110000.000000")

    async def listed(query: str) -> list[str]:
        answer = await service.get(f"/jobs?{query}", headers=public())
        assert answer.status_code == 200, answer.text
        assert answer.headers["X-Total-Count"] == str(len(answer.json()))
        return answer.json()

    assert await listed("q=WARD 7") == [ward]
    assert await listed("q=network&status=Failure&server=orthanc-2") == [study]
    assert await listed("q=network&status=Success") == []
    assert await listed(f"resource={STUDY.upper()}") == [study]
    assert await listed("created-since=2026-11-28T09:30:00Z") == [study, running]
    assert await listed("created-until=20261128T100000&type=archive") == [ward, study]
    assert await listed("created-since=2026-11-28T10:30:00%2B01:00&created-until=2026-11-28") == [
        study,
        running,
    ]
    assert await listed("completed-since=2026-11-28") == [study]
    assert await listed(f"ids={running},{ward}") == [ward, running]
    assert await listed(f"ids={running}&ids={study}&status=Running") == [running]
    expanded = (await service.get(f"/jobs?expand&ids={ward}", headers=public())).json()
    assert [job["ID"] for job in expanded] == [ward]


async def test_a_filter_the_listing_cannot_read_is_an_orthanc_shaped_400(service: httpx.AsyncClient) -> None:
    answer = await service.get("/jobs?created-since=yesterday", headers=public())
    assert answer.status_code == 400
    body = answer.json()
    assert body["HttpStatus"] == 400 and body["OrthancError"] == "Bad request" and body["Uri"] == "/jobs"
    assert "created-since/created-until: 'yesterday' is not a time" in body["Message"]
    assert (await service.get("/jobs?resource=12", headers=public())).status_code == 400
    assert (await service.get("/jobs?ids=12", headers=public())).status_code == 400
    # Credentials are checked before the filters: a stranger learns nothing from them.
    assert (await service.get("/jobs?created-since=yesterday")).status_code == 401


async def test_text_with_quotes_and_backslashes_is_found_through_the_listing(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    job_id = await _known(service, orthanc, URL1, Content={"Description": 'Ward "7" C:\\PACS'})
    for text in ['WARD "7"', "c:\\pacs"]:
        answer = await service.get("/jobs", params={"q": text}, headers=public())
        assert answer.json() == [job_id], text


async def test_times_beyond_the_calendar_are_its_ends_and_a_bad_zone_is_a_clear_400(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    job_id = await _known(service, orthanc, URL1, CompletionTime="20261128T100500.000000")
    for query, listed in [
        ("created-until=9999-12-31", [job_id]),
        ("created-since=9999-12-31T23:00-01:00", []),
        ("created-since=0001-01-01T00:00%2B01:00", [job_id]),
        ("completed-until=9999-12-31T23:59:59.999999", [job_id]),
    ]:
        answer = await service.get(f"/jobs?{query}", headers=public())
        assert (answer.status_code, answer.json()) == (200, listed), query
    answer = await service.get("/jobs?created-since=2025-01-01T12:00%2B99:00", headers=public())
    assert answer.status_code == 400
    assert answer.json()["Message"] == (
        "created-since/created-until: '2025-01-01T12:00+99:00' has no such zone: write Z, or an offset from "
        "-23:59 to +23:59"
    )


async def test_without_the_new_filters_the_listing_answers_as_before(
    service: httpx.AsyncClient, orthanc: FakeOrthanc
) -> None:
    first = await _known(service, orthanc, URL1)
    second = await _known(service, orthanc, URL2, CreationTime="20261128T100001.000000")
    answer = await service.get("/jobs", headers=public())
    assert answer.content == f'["{first}","{second}"]'.encode()
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["X-Total-Count"] == "2"

"""The filters of ``GET /jobs``: as query parameters, and matched locally against streamed jobs."""

import pytest

from orthanc_jobs.client import JobFilter
from tests.unit.client.fakes import job


def test_filters_split_values_and_match_like_the_api() -> None:
    where = JobFilter.of(["success,Failure"], ["archive"], ["orthanc-1"])
    assert where.params() == [
        ("status", "success"),
        ("status", "Failure"),
        ("type", "archive"),
        ("server", "orthanc-1"),
    ]
    assert where.matches(job("a", "Success"))
    assert not where.matches(job("a", "Running"))
    assert not JobFilter.of(types=["DicomModalityStore"]).matches(job("a"))
    assert JobFilter.of(servers=["http://o1"]).matches(job("a"))
    assert not JobFilter.of(servers=["orthanc-2"]).matches(job("a"))
    assert JobFilter().matches({"ID": "no fields at all"})


def test_the_search_filters_are_sent_by_the_listings_names() -> None:
    where = JobFilter.of(
        ["Failure"],
        ids=["A1B2C3D4-0000-4000-8000-000000000000, 11111111-1111-1111-1111-111111111111"],
        created_since="2025-01-01",
        created_until=" ",
        completed_until="20250131T120000",
        text="ward 7",
        resource="b9c08539-26f93bde-c81ab0d7-bffaf2cb-a4d0bdd0",
    )
    assert where.params() == [
        ("status", "Failure"),
        ("ids", "A1B2C3D4-0000-4000-8000-000000000000,11111111-1111-1111-1111-111111111111"),
        ("created-since", "2025-01-01"),
        ("completed-until", "20250131T120000"),
        ("q", "ward 7"),
        ("resource", "b9c08539-26f93bde-c81ab0d7-bffaf2cb-a4d0bdd0"),
    ]


def test_the_search_filters_match_streamed_jobs_by_the_services_rules() -> None:
    study = "b9c08539-26f93bde-c81ab0d7-bffaf2cb-a4d0bdd0"
    seen = job(
        "a1b2c3d4-0000-4000-8000-000000000000",
        "Failure",
        created="20250101T100000.000000",
        CompletionTime="20250101T101000.000000",
        ErrorDescription="Error in the network protocol",
        Content={"Description": "Ward 7", "ParentResources": [study]},
    )
    for where in [
        JobFilter.of(ids=["A1B2C3D4-0000-4000-8000-000000000000"]),
        JobFilter.of(created_since="2025-01-01", created_until="2025-01-01"),
        JobFilter.of(completed_since="2025-01-01T10:10:00Z"),
        JobFilter.of(text="WARD 7"),
        JobFilter.of(text="network"),
        JobFilter.of(resource=study.upper()),
    ]:
        assert where.matches(seen), where
    for where in [
        JobFilter.of(ids=["11111111-1111-1111-1111-111111111111"]),
        JobFilter.of(created_until="2024-12-31"),
        JobFilter.of(completed_until="20250101T100959"),
        JobFilter.of(text="orthanc-1"),  # the Server field is not searched
        JobFilter.of(resource="b9c08539-26f93bde-c81ab0d7-bffaf2cb-a4d0bdd1"),
    ]:
        assert not where.matches(seen), where
    assert not JobFilter.of(text="x").matches({"no": "ID"})


def test_a_search_filter_that_cannot_be_read_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="'yesterday' is not a time"):
        JobFilter.of(created_since="yesterday")
    with pytest.raises(ValueError, match="not an Orthanc resource id"):
        JobFilter.of(resource="1234")

"""The filters of ``GET /jobs``: as query parameters, and matched locally against streamed jobs."""

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

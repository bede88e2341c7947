"""What a job must be to match a query: times as people and scripts write them, the text and resource
searches on the serialised job, and every criterion together."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orthanc_jobs.core.filters import (
    EVERY_JOB,
    JobQuery,
    ResourceSearch,
    TextSearch,
    TimeRange,
    completion_time,
    parse_time,
)
from orthanc_jobs.core.model import Job

JOB_ID = "0f4b3f0a-8a4e-4c43-9a5e-3c1f6b2e9d10"
STUDY = "b9c08539-26f93bde-c81ab0d7-bffaf2cb-a4d0bdd0"


def make_job(state: str = "Success", **fields: Any) -> Job:
    content = {
        "ID": fields.pop("ID", JOB_ID),
        "Type": fields.pop("Type", "Archive"),
        "State": state,
        "Progress": 100,
        "CreationTime": fields.pop("CreationTime", "20250101T120000.250000"),
        "Timestamp": "20250101T120500.000000",
        "ErrorCode": 0,
        "ErrorDescription": "Success",
        "ErrorDetails": "",
        "Content": fields.pop("Content", {"Description": "REST API", "Resources": [STUDY]}),
        **fields,
    }
    if state in ("Success", "Failure"):
        content.setdefault("CompletionTime", "20250101T120400.500000")
    return Job.from_content(content, server_url="http://o1:8042", incarnation="inc-1", first_seen=0.0)


@pytest.mark.parametrize(
    ("written", "moment", "span"),
    [
        ("20250101T120000", datetime(2025, 1, 1, 12, tzinfo=UTC), timedelta(seconds=1)),
        (
            "20250101T120000.25",
            datetime(2025, 1, 1, 12, 0, 0, 250000, tzinfo=UTC),
            timedelta(microseconds=10000),
        ),
        ("20250101T120000.000001", datetime(2025, 1, 1, 12, 0, 0, 1, tzinfo=UTC), timedelta(microseconds=1)),
        ("2025-01-01T12:00:00Z", datetime(2025, 1, 1, 12, tzinfo=UTC), timedelta(seconds=1)),
        ("2025-01-01T14:30+02:00", datetime(2025, 1, 1, 12, 30, tzinfo=UTC), timedelta(minutes=1)),
        ("2025-01-01T12", datetime(2025, 1, 1, 12, tzinfo=UTC), timedelta(hours=1)),
        ("2025-01-01", datetime(2025, 1, 1, tzinfo=UTC), timedelta(days=1)),
        ("20250101", datetime(2025, 1, 1, tzinfo=UTC), timedelta(days=1)),
    ],
)
def test_times_are_read_in_orthancs_format_and_iso_8601_with_their_precision(
    written: str, moment: datetime, span: timedelta
) -> None:
    assert parse_time(written) == (moment, span)


@pytest.mark.parametrize(
    "written", ["yesterday", "2025-13-01", "20250230T000000", "2025-01-01T25:00", "1736"]
)
def test_what_is_not_a_time_is_refused(written: str) -> None:
    with pytest.raises(ValueError, match=r"not a time|no such day"):
        parse_time(written)


def test_a_range_holds_until_the_end_of_what_until_says() -> None:
    day = TimeRange.between("2025-01-01", "2025-01-01")
    assert day == TimeRange("20250101T000000", "20250102T000000")
    assert "20250101T235959.999999" in day and "20250102T000000" not in day
    assert "20250102T000000.000000" not in day  # Orthanc's usual form, with its fraction
    assert "20241231T235959.999999" not in day
    exact = TimeRange.between("20250101T120000.5", None)
    assert exact == TimeRange("20250101T120000.500000", None)
    assert "20250101T120000.500000" in exact and "20250101T120000.499999" not in exact
    assert "20250101T120000" not in exact
    assert "" not in TimeRange.between(None, "2025-01-01")  # a job without the time is in no range
    with pytest.raises(ValueError, match="is after"):
        TimeRange.between("2025-01-02", "2025-01-01")


@pytest.mark.parametrize(
    ("since", "until", "expected"),
    [
        # Beyond the times Python can hold: the earliest or the latest, not an error.
        (None, "9999-12-31", TimeRange()),
        (None, "9999-12-31T23:59:59.999999", TimeRange()),
        ("9999-12-31T23:00-01:00", None, TimeRange("99991231T235959.999999", None)),
        ("0001-01-01T00:00+01:00", None, TimeRange("00010101T000000", None)),
        ("0001-01-01T00:00+01:00", "9999-12-31T23:00-01:00", TimeRange("00010101T000000", None)),
        (None, "9999-12-30", TimeRange(end="99991231T000000")),
        ("0999-01-01", None, TimeRange("09990101T000000", None)),  # four digits: it sorts before 2025
    ],
)
def test_a_range_beyond_the_calendar_stops_at_its_ends(
    since: str | None, until: str | None, expected: TimeRange
) -> None:
    assert TimeRange.between(since, until) == expected


@pytest.mark.parametrize(
    "written", ["2025-01-01T12:00+99:00", "2025-01-01T12:00-24:00", "2025-01-01T12:00+01:60"]
)
def test_a_zone_that_is_not_one_is_refused_with_a_clear_message(written: str) -> None:
    with pytest.raises(ValueError) as raised:
        TimeRange.between(written, None)
    assert str(raised.value) == f"{written!r} has no such zone: write Z, or an offset from -23:59 to +23:59"


def test_the_completion_time_is_read_from_the_serialised_job() -> None:
    assert completion_time(make_job("Success")) == "20250101T120400.500000"
    assert completion_time(make_job("Running")) == ""
    # In Orthanc's order (keys sorted), the first field.
    ordered = {"CompletionTime": "20250101T120400.700000", **make_job("Running").content, "State": "Success"}
    first = Job.from_content(ordered, server_url="http://o1:8042", incarnation="inc-1", first_seen=0.0)
    assert first.json_head.startswith(b'{"CompletionTime"')
    assert completion_time(first) == "20250101T120400.700000"
    # A key of the same name within the Content: the job is parsed, and its own field read.
    tricky = make_job("Failure", Content={"CompletionTime": "19990101T000000"})
    assert completion_time(tricky) == "20250101T120400.500000"


def test_text_is_found_in_the_searched_fields_only_in_any_case() -> None:
    job = make_job(
        "Failure",
        Type="DicomModalityStore",
        ErrorDescription="Error in the network protocol",
        ErrorDetails='Cannot send to "PACS-2", no answer',
        Content={"Description": "Nightly copy of Ward 7", "RemoteAet": "PACS2"},
    )
    for text in [
        "nightly COPY",
        "modalitystore",
        "network protocol",
        '"pacs-2"',
        "remoteaet",
        JOB_ID[:8].upper(),
    ]:
        assert TextSearch(text).found_in(job), text
    # In the job's JSON, but not in the fields searched: its keys, state and times.
    for text in ["creationtime", "failure", "20250101", '"content"', "ward 8"]:
        assert not TextSearch(text).found_in(job), text


def test_text_with_quotes_and_backslashes_is_found_in_the_content_in_any_case() -> None:
    job = make_job(Content={"Description": 'Ward "7" C:\\PACS'})
    for text in ['ward "7"', 'WARD "7" c:', "c:\\pacs", "C:\\PaCs", '"7" c:\\pacs', "description"]:
        assert TextSearch(text).found_in(job), text
        assert JobQuery(text=TextSearch(text)).matches(job), text
    for text in ['ward "8"', "c:/pacs", "c:\\\\\\pacs"]:
        assert not TextSearch(text).found_in(job), text


def test_text_beyond_ascii_is_found_in_any_case() -> None:
    job = make_job(Content={"Description": "Étude du CŒUR"})
    assert TextSearch("étude du cœur").found_in(job)
    assert TextSearch("ÉTUDE").found_in(make_job(Content={"Description": "étude"}))
    assert not TextSearch("étude").found_in(make_job(Content={"Description": "etude"}))


def test_a_resource_is_found_as_a_whole_id_in_the_content_only() -> None:
    assert ResourceSearch(STUDY).named_by(make_job())
    assert ResourceSearch(STUDY.upper()).named_by(make_job())
    assert ResourceSearch(STUDY).named_by(make_job(Content={"Path": f"/studies/{STUDY}/archive"}))
    assert not ResourceSearch(STUDY).named_by(make_job(Content={"Resources": [STUDY + "-ff"]}))
    assert not ResourceSearch(STUDY).named_by(make_job(Content={"Resources": ["0" + STUDY[1:]]}))
    assert not ResourceSearch(STUDY).named_by(make_job(Content={}, ErrorDetails=f"about {STUDY}"))
    with pytest.raises(ValueError, match="not an Orthanc resource id"):
        ResourceSearch("b9c08539-26f93bde")


def test_a_job_matches_when_it_meets_every_criterion() -> None:
    job = make_job()
    assert EVERY_JOB.matches(job)
    meets = JobQuery(
        states=frozenset({"Success"}),
        types=frozenset({"archive"}),
        server_urls=frozenset({"http://o1:8042"}),
        ids=frozenset({JOB_ID}),
        created=TimeRange.between("2025-01-01", "2025-01-01"),
        completed=TimeRange.between("20250101T120400", None),
        text=TextSearch("rest api"),
        resource=ResourceSearch(STUDY),
    )
    assert meets.matches(job)
    for field, value in [
        ("states", frozenset({"Failure"})),
        ("types", frozenset({"media"})),
        ("server_urls", frozenset({"http://o2:8042"})),
        ("ids", frozenset({"00000000-0000-0000-0000-000000000000"})),
        ("created", TimeRange.between("2025-01-02", None)),
        ("completed", TimeRange.between(None, "20250101T120400.4")),
        ("text", TextSearch("media")),
        ("resource", ResourceSearch(STUDY.replace("b9", "c9"))),
    ]:
        assert not replace(meets, **{field: value}).matches(job), field
    assert not JobQuery(completed=TimeRange.between("2000-01-01", None)).matches(make_job("Running"))

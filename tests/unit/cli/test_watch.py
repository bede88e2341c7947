"""The live table of ``watch``: the newest jobs that match, kept up to date by the event stream."""

import json

from orthanc_jobs.cli.watch import LiveJobs
from orthanc_jobs.client import JobFilter, ServerSentEvent
from tests.unit.client.fakes import job


def job_event(data: dict, event_id: int = 1) -> ServerSentEvent:
    return ServerSentEvent("job", json.dumps(data), str(event_id))


def test_live_jobs_keep_the_newest_that_match() -> None:
    live = LiveJobs(JobFilter.of(["Running", "Pending"]), limit=2)
    live.load([job("a", created="20250101T000001"), job("b", created="20250101T000002")], servers=[])
    assert live.apply(job_event(job("c", created="20250101T000003"))) is False
    assert [j["ID"] for j in live.rows()] == ["b", "c"]  # the oldest left
    live.apply(job_event(job("b", "Success", created="20250101T000002")))  # out of the filter
    assert [j["ID"] for j in live.rows()] == ["c"]
    live.apply(job_event(job("c", "Pending", created="20250101T000003", Progress=50)))
    assert live.rows()[0]["Progress"] == 50
    live.apply(ServerSentEvent("removed", json.dumps({"ID": "c"})))
    assert live.rows() == []


def test_live_jobs_servers_reset_and_junk() -> None:
    live = LiveJobs()
    server = {"Name": "orthanc-1", "Url": "http://o1", "Status": "stopped"}
    live.apply(ServerSentEvent("server", json.dumps(server)))
    assert live.servers == {"http://o1": server}
    assert live.apply(ServerSentEvent("reset", "{}")) is True
    for junk in (
        ServerSentEvent("job", "not json"),
        ServerSentEvent("job", "[1]"),
        ServerSentEvent("x", "{}"),
    ):
        assert live.apply(junk) is False
    assert live.jobs == {}

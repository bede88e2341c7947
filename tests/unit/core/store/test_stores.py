"""What every store keeps, the same on SQLite and on PostgreSQL."""

from collections.abc import Callable

import pytest

from orthanc_jobs.core.model import Job
from orthanc_jobs.core.store import Store
from orthanc_jobs.core.store.postgres import MIGRATIONS, NewerDatabase, PostgresStore
from tests.unit.fake_orthanc import a_server

FIRST = "11111111-1111-1111-1111-111111111111"
SECOND = "22222222-2222-2222-2222-222222222222"


def a_job(job_id: str, state: str, **fields: object) -> Job:
    content = {"ID": job_id, "State": state, "Type": "Archive", "CreationTime": "20261128T100000.000000"}
    return Job.from_content(content, server_url=a_server().url, incarnation="inc-1", first_seen=3.0, **fields)  # type: ignore[arg-type]


def as_row(job: Job) -> tuple[object, ...]:
    return (
        job.id,
        job.server_url,
        job.incarnation,
        job.content,
        job.first_seen,
        job.finished_at,
        job.history_only,
        job.presumed,
    )


def test_what_is_written_is_read_back(open_history: Callable[[], Store]) -> None:
    store = open_history()
    server = a_server()
    server.gap = {"DroppedEvents": 5, "DroppedJobJson": 2, "First": 1.5, "Last": 2.5}
    server.stopped = True
    server.orthanc_version = "1.12.7"
    jobs = [
        a_job(FIRST, "Failure", presumed=True, history_only=True, finished_at=4.5),
        a_job(SECOND, "Running"),
    ]
    store.save_server(server)
    for job in jobs:
        store.save_job(job)
    store.close()

    servers, loaded = open_history().load()

    assert servers == [server]
    assert sorted(map(as_row, loaded)) == sorted(map(as_row, jobs))


def test_a_newer_state_replaces_the_older_and_a_deletion_removes(open_history: Callable[[], Store]) -> None:
    store = open_history()
    store.save_job(a_job(FIRST, "Running"))
    store.save_job(a_job(SECOND, "Pending"))
    store.flush()
    store.save_job(a_job(FIRST, "Success", finished_at=9.0))
    store.delete_job(SECOND)
    store.flush()
    store.close()

    _, loaded = open_history().load()

    assert [(job.id, job.state, job.finished_at) for job in loaded] == [(FIRST, "Success", 9.0)]


def test_a_failed_write_is_given_back_under_the_newer_changes(open_history: Callable[[], Store]) -> None:
    store = open_history()
    store.save_job(a_job(FIRST, "Running"))
    handed = store.take_pending()
    store.save_job(a_job(FIRST, "Success"))  # noted while the write failed
    store.save_job(a_job(SECOND, "Pending"))
    store.restore_pending(handed)
    store.flush()
    store.close()

    _, loaded = open_history().load()

    assert sorted((job.id, job.state) for job in loaded) == [(FIRST, "Success"), (SECOND, "Pending")]


def test_opening_again_migrates_nothing_twice(open_history: Callable[[], Store]) -> None:
    open_history().close()
    store = open_history()
    store.save_server(a_server())
    store.close()
    assert open_history().load()[0] == [a_server()]


def test_a_database_of_a_newer_service_is_refused(postgresql_url: str) -> None:
    import psycopg

    schema = "test_newer"
    PostgresStore(postgresql_url, schema).close()
    with psycopg.connect(postgresql_url, autocommit=True) as db:
        db.execute(f"INSERT INTO {schema}.migrations (version) VALUES (%s)", (MIGRATIONS[-1][0] + 1,))
    with pytest.raises(NewerDatabase, match="newer than this job-service"):
        PostgresStore(postgresql_url, schema)


def test_a_schema_name_is_checked(postgresql_url: str) -> None:
    with pytest.raises(ValueError, match="not a schema name"):
        PostgresStore(postgresql_url, 'x"; DROP TABLE jobs; --')

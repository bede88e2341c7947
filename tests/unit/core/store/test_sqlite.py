"""The SQLite history: what it keeps, and what it does with a file it cannot trust."""

import logging
import os
import sqlite3
from pathlib import Path

import pytest

from orthanc_jobs.core.model import Job, Server
from orthanc_jobs.core.store import SqliteStore
from tests.unit.fake_orthanc import a_server

JOB_ID = "11111111-1111-1111-1111-111111111111"


def server() -> Server:
    return a_server()


def job(presumed: bool = False) -> Job:
    content = {"ID": JOB_ID, "State": "Failure", "Type": "Archive", "CreationTime": "20261128T100000.000000"}
    return Job.from_content(
        content, server_url=server().url, incarnation="inc-1", first_seen=3.0, presumed=presumed
    )


def history(path: Path) -> None:
    store = SqliteStore(str(path))
    store.save_server(server())
    store.save_job(job(presumed=True))
    store.close()


def test_what_is_written_is_read_back_with_the_presumption(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    history(path)

    store = SqliteStore(str(path))
    servers, jobs = store.load()

    assert store.moved_aside is None
    assert [s.url for s in servers] == [server().url]
    assert [(j.id, j.state, j.presumed) for j in jobs] == [(JOB_ID, "Failure", True)]
    assert oct(path.stat().st_mode & 0o777) == "0o600"  # it holds the servers' REST tokens


def test_a_file_of_the_previous_version_is_kept_and_migrated(tmp_path: Path) -> None:
    """Version 1 had the same tables without the presumed column, and no user_version."""
    path = tmp_path / "history.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE servers (url TEXT PRIMARY KEY, name TEXT NOT NULL, incarnation TEXT NOT NULL,
                token TEXT NOT NULL, registered_at REAL NOT NULL, last_seen REAL NOT NULL,
                stopped INTEGER NOT NULL, orthanc_version TEXT NOT NULL);
            CREATE TABLE jobs (id TEXT PRIMARY KEY, server_url TEXT NOT NULL, incarnation TEXT NOT NULL,
                first_seen REAL NOT NULL, finished_at REAL, history_only INTEGER NOT NULL,
                content BLOB NOT NULL);
            """
        )
        db.execute(
            "INSERT INTO servers VALUES ('http://127.0.0.1:8001', 'orthanc-1', 'inc-1', 't', 1, 2, 0, '')"
        )
        db.execute(
            "INSERT INTO jobs VALUES (?, 'http://127.0.0.1:8001', 'inc-1', 3, 4, 1, ?)",
            (JOB_ID, b'{"ID": "' + JOB_ID.encode() + b'", "State": "Success"}'),
        )

    store = SqliteStore(str(path))
    servers, jobs = store.load()

    assert store.moved_aside is None
    assert len(servers) == 1
    assert [(j.id, j.state, j.history_only, j.presumed) for j in jobs] == [(JOB_ID, "Success", True, False)]


def damage(path: Path, how: str) -> None:
    if how == "emptied":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(os.urandom(8192))
    elif how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2 + 100])
    elif how == "foreign":  # a SQLite file, but not one of ours
        path.unlink()
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE photos (name TEXT)")
    elif how == "bad row":
        with sqlite3.connect(path) as db:
            db.execute("UPDATE jobs SET content = X'7b6e6f7065'")  # '{nope'


@pytest.mark.parametrize("how", ["emptied", "garbage", "truncated", "foreign", "bad row"])
def test_a_file_it_cannot_trust_is_moved_aside_loudly_and_the_store_starts_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    path = tmp_path / "history.sqlite3"
    history(path)
    # Pages enough that cutting the file in half damages its content.
    store = SqliteStore(str(path))
    for number in range(300):
        store.save_job(
            Job.from_content(
                {"ID": f"{number:08d}-1111-1111-1111-111111111111", "State": "Success"},
                server_url=server().url,
                incarnation="inc-1",
                first_seen=1.0,
            )
        )
    store.close()
    original = path.read_bytes()
    damage(path, how)

    with caplog.at_level(logging.ERROR):
        store = SqliteStore(str(path))
    servers, jobs = store.load()

    assert (servers, jobs) == ([], [])
    assert store.moved_aside is not None
    aside = Path(store.moved_aside)
    assert aside.name.startswith("history.sqlite3.damaged-")
    assert aside.read_bytes() != original or how == "bad row"  # what was there is kept, as it was
    assert any("cannot be used" in r.message and str(aside) in r.message for r in caplog.records)
    # The new file works, and is trusted at the next start.
    store.save_server(server())
    store.close()
    again = SqliteStore(str(path))
    assert again.moved_aside is None and len(again.load()[0]) == 1


def test_two_damaged_files_in_the_same_second_are_both_kept(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    asides = []
    for _ in range(2):
        path.write_bytes(b"")
        store = SqliteStore(str(path))
        asides.append(store.moved_aside)
        store.close()
    assert len({*asides}) == 2 and all(Path(a).exists() for a in asides if a)


def test_a_file_out_of_reach_is_not_moved_aside_the_start_fails(tmp_path: Path) -> None:
    """A lock, permissions, a full disk: not the file's fault. Moving it aside would lose a sound history."""
    folder = tmp_path / "history.sqlite3"
    folder.mkdir()  # SQLite cannot open a folder: "unable to open database file"

    with pytest.raises(sqlite3.OperationalError):
        SqliteStore(str(folder))

    assert folder.is_dir() and not list(tmp_path.glob("*.damaged-*"))


def test_a_failed_write_gives_its_changes_back_under_newer_ones(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "history.sqlite3"))
    store.save_job(job())
    taken = store.take_pending()
    newer = job(presumed=True)
    store.save_job(newer)

    store.restore_pending(taken)

    assert store.take_pending().jobs == {JOB_ID: newer}

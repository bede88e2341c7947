"""The registry's history in a local SQLite file, so that it survives a restart of the job-service.

Writes are gathered in memory (``save_*``) and written in one transaction by ``write``, from a worker
thread: thousands of job events a second cost a handful of commits.

At start the file is checked. A file that is damaged, or was emptied behind the service's back (a file
this store made always holds its schema), is moved aside, named in an error in the log, and the service
starts with an empty history: the servers' plugins register again and every job their Orthanc still holds
is read back. Losing the history is bad; a job-service that does not start, or starts quietly on a
fraction of it, is worse.
"""

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

import orjson

from orthanc_jobs.core.model import Job, Server
from orthanc_jobs.core.store.base import (
    JOB_COLUMNS,
    SERVER_COLUMNS,
    Pending,
    PendingChanges,
    job_from_row,
    job_row,
    server_from_row,
    server_row,
)

log = logging.getLogger(__name__)

#: ``PRAGMA user_version`` of a file this store made: 0 means the file holds no schema of ours.
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS servers (
    url TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    token TEXT NOT NULL,
    registered_at REAL NOT NULL,
    last_seen REAL NOT NULL,
    stopped INTEGER NOT NULL,
    orthanc_version TEXT NOT NULL,
    gap TEXT
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    server_url TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    first_seen REAL NOT NULL,
    finished_at REAL,
    history_only INTEGER NOT NULL,
    content BLOB NOT NULL,
    presumed INTEGER NOT NULL DEFAULT 0
);
"""
_JOB_COLUMNS = ", ".join(JOB_COLUMNS)
_SERVER_COLUMNS = ", ".join(SERVER_COLUMNS)


class DamagedStore(sqlite3.DatabaseError):
    """The file is not a history this store can use."""


def _is_damage(error: sqlite3.DatabaseError) -> bool:
    """Is the file itself damaged (moved aside), rather than out of reach for now (start refused)?"""
    if isinstance(error, DamagedStore):
        return True
    name = getattr(error, "sqlite_errorname", "")
    if name:
        return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
    return "malformed" in str(error) or "not a database" in str(error)


class SqliteStore(PendingChanges):
    def __init__(self, path: str) -> None:
        super().__init__()
        #: Where a damaged file was moved at start (None: it was sound, or new).
        self.moved_aside: str | None = None
        self._path = path
        #: What the start's check read, handed over by the first load() (None: read when asked).
        self._loaded: tuple[list[Server], list[Job]] | None = None
        if path == ":memory:":
            self._db = self._open(path, existed=False)
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            try:
                self._db = self._open(path, existed=os.path.exists(path))
                try:
                    self._loaded = self._read()
                except sqlite3.DatabaseError:
                    self._db.close()  # before the file is moved aside
                    raise
            except sqlite3.DatabaseError as error:
                if not _is_damage(error):
                    # Not the file's fault (permissions, a lock, a full disk): the file is kept, the service
                    # does not start, and the message says why.
                    raise
                self.moved_aside = self._move_aside(path, error)
                self._db = self._open(path, existed=False)
        self._lock = threading.Lock()  # one write at a time

    @staticmethod
    def _open(path: str, existed: bool) -> sqlite3.Connection:
        if path != ":memory:" and not existed:
            Path(path).touch(mode=0o600)  # it holds the servers' REST tokens
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if existed and version == 0 and not {"jobs", "servers"} <= tables:
                # Version 1 files had the tables and no user_version; an emptied file has neither.
                size = os.path.getsize(path)
                raise DamagedStore(f"the file holds no history of this service ({size} bytes, no schema)")
            if existed:
                problems = [row[0] for row in db.execute("PRAGMA quick_check")]
                if problems != ["ok"]:
                    raise DamagedStore("SQLite's check failed: " + "; ".join(problems[:5]))
            db.execute("PRAGMA journal_mode=WAL")
            # WAL with synchronous NORMAL: a committed write survives a crash of the process (kill -9),
            # not always a power cut.
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            # Files of version 1 have neither column.
            if "presumed" not in {row[1] for row in db.execute("PRAGMA table_info(jobs)")}:
                db.execute("ALTER TABLE jobs ADD COLUMN presumed INTEGER NOT NULL DEFAULT 0")
            if "gap" not in {row[1] for row in db.execute("PRAGMA table_info(servers)")}:
                db.execute("ALTER TABLE servers ADD COLUMN gap TEXT")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _move_aside(path: str, error: Exception) -> str:
        aside = f"{path}.damaged-{time.strftime('%Y%m%dT%H%M%S')}"
        number = 1
        while os.path.exists(aside):
            number += 1
            aside = f"{path}.damaged-{time.strftime('%Y%m%dT%H%M%S')}-{number}"
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.replace(path + suffix, aside + suffix)
        log.error(
            "the job history %s cannot be used (%s): moved aside to %s; starting with an empty history, "
            "rebuilt from what the Orthanc servers still hold (their plugins register again). Jobs that only "
            "the history held are in the file moved aside.",
            path,
            error,
            aside,
        )
        return aside

    def load(self) -> tuple[list[Server], list[Job]]:
        loaded, self._loaded = self._loaded, None  # read once, at start: not kept in memory twice
        return loaded if loaded is not None else self._read()

    def _read(self) -> tuple[list[Server], list[Job]]:
        """Every server and job in the file; any row that cannot be read makes the file damaged."""
        try:
            servers = [
                server_from_row(row, orjson.loads(row[-1]) if row[-1] else None)
                for row in self._db.execute(f"SELECT {_SERVER_COLUMNS} FROM servers")
            ]
            jobs = [job_from_row(row) for row in self._db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs")]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise DamagedStore(f"a row cannot be read: {error!r}") from error
        return servers, jobs

    def write(self, pending: Pending) -> None:
        """Write what ``take_pending`` handed over, in one transaction (from any thread)."""
        if not pending:
            return
        jobs, servers = pending.jobs, pending.servers
        upserts = [job_row(job) for job in jobs.values() if job is not None]
        deletes = [(job_id,) for job_id, job in jobs.items() if job is None]
        server_rows = [
            server_row(s, orjson.dumps(s.gap).decode() if s.gap is not None else None)
            for s in servers.values()
        ]
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    f"INSERT OR REPLACE INTO jobs ({_JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", upserts
                )
                self._db.executemany("DELETE FROM jobs WHERE id = ?", deletes)
                self._db.executemany(
                    f"INSERT OR REPLACE INTO servers ({_SERVER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    server_rows,
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self.flush()  # nothing left after the housekeeper's last flush; a store used on its own, its changes
        self._db.close()

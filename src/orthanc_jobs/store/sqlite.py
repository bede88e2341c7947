"""The registry's history in a local SQLite file, so that it survives a restart of the job-service.

Writes are gathered in memory and written in one transaction by ``flush()``, which the application calls
a few times a second from a worker thread: thousands of job events a second cost a handful of commits.
"""

import sqlite3
import threading
from pathlib import Path

import orjson

from orthanc_jobs.model import Job, Server

_SCHEMA = """
CREATE TABLE IF NOT EXISTS servers (
    url TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    token TEXT NOT NULL,
    registered_at REAL NOT NULL,
    last_seen REAL NOT NULL,
    stopped INTEGER NOT NULL,
    orthanc_version TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    server_url TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    first_seen REAL NOT NULL,
    finished_at REAL,
    history_only INTEGER NOT NULL,
    content BLOB NOT NULL
);
"""


class SqliteStore:
    def __init__(self, path: str) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).touch(mode=0o600)  # it holds the servers' REST tokens
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()  # one flush at a time
        self._jobs: dict[str, Job | None] = {}  # None: delete
        self._servers: dict[str, Server] = {}

    def load(self) -> tuple[list[Server], list[Job]]:
        servers = [
            Server(
                url=row[0],
                name=row[1],
                incarnation=row[2],
                token=row[3],
                registered_at=row[4],
                last_seen=row[5],
                stopped=bool(row[6]),
                orthanc_version=row[7],
            )
            for row in self._db.execute("SELECT * FROM servers")
        ]
        jobs = [
            Job.from_content(
                orjson.loads(content),
                server_url=server_url,
                incarnation=incarnation,
                first_seen=first_seen,
                finished_at=finished_at,
                history_only=bool(history_only),
            )
            for (server_url, incarnation, first_seen, finished_at, history_only, content) in self._db.execute(
                "SELECT server_url, incarnation, first_seen, finished_at, history_only, content FROM jobs"
            )
        ]
        return servers, jobs

    def save_server(self, server: Server) -> None:
        self._servers[server.url] = server

    def save_job(self, job: Job) -> None:
        self._jobs[job.id] = job

    def delete_job(self, job_id: str) -> None:
        self._jobs[job_id] = None

    def take_pending(self) -> tuple[dict[str, Job | None], dict[str, Server]]:
        """Hand over what is waiting to be written (on the event loop's thread)."""
        jobs, servers = self._jobs, self._servers
        self._jobs, self._servers = {}, {}
        return jobs, servers

    def write(self, jobs: dict[str, Job | None], servers: dict[str, Server]) -> None:
        """Write what ``take_pending`` handed over, in one transaction (from any thread)."""
        if not jobs and not servers:
            return
        upserts = [
            (
                job.id,
                job.server_url,
                job.incarnation,
                job.first_seen,
                job.finished_at,
                int(job.history_only),
                orjson.dumps(job.content),
            )
            for job in jobs.values()
            if job is not None
        ]
        deletes = [(job_id,) for job_id, job in jobs.items() if job is None]
        server_rows = [
            (
                s.url,
                s.name,
                s.incarnation,
                s.token,
                s.registered_at,
                s.last_seen,
                int(s.stopped),
                s.orthanc_version,
            )
            for s in servers.values()
        ]
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?)", upserts)
                self._db.executemany("DELETE FROM jobs WHERE id = ?", deletes)
                self._db.executemany(
                    "INSERT OR REPLACE INTO servers VALUES (?, ?, ?, ?, ?, ?, ?, ?)", server_rows
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def flush(self) -> None:
        self.write(*self.take_pending())

    def close(self) -> None:
        self.flush()
        self._db.close()

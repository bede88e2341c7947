"""The registry's history in PostgreSQL: the database a cluster of Orthanc servers already runs.

Selected by ``ORTHANC_JOBS_DATABASE=postgresql://...``. The service keeps its tables in a schema of its own
(``orthanc_jobs`` by default, ``ORTHANC_JOBS_DATABASE_SCHEMA``), which it creates at start and brings up
to date with numbered migrations, under an advisory lock (replicas starting together migrate once). A
database newer than this service (a downgrade) is refused at start with the reason, never written to.

Writes are gathered in memory (``record``) and written in one transaction by ``write``, from a worker
thread, as with SQLite.
"""

import logging
import re

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from orthanc_jobs.core.model import Job, Server
from orthanc_jobs.core.store.base import (
    JOB_COLUMNS,
    SERVER_COLUMNS,
    PendingChanges,
    job_from_row,
    job_row,
    server_from_row,
    server_row,
)

log = logging.getLogger(__name__)

#: The migrations, in order: (version, statements). A released version is never changed, only added to.
MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE {schema}.servers (
            url TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            incarnation TEXT NOT NULL,
            token TEXT NOT NULL,
            registered_at DOUBLE PRECISION NOT NULL,
            last_seen DOUBLE PRECISION NOT NULL,
            stopped BOOLEAN NOT NULL,
            orthanc_version TEXT NOT NULL,
            gap JSONB
        );
        CREATE TABLE {schema}.jobs (
            id TEXT PRIMARY KEY,
            server_url TEXT NOT NULL,
            incarnation TEXT NOT NULL,
            first_seen DOUBLE PRECISION NOT NULL,
            finished_at DOUBLE PRECISION,
            history_only BOOLEAN NOT NULL,
            presumed BOOLEAN NOT NULL,
            content BYTEA NOT NULL
        );
        """,
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]
# Seconds a write waits for a connection (PostgreSQL away) before it fails.
WRITE_TIMEOUT = 5.0
# Serialises the migrations of replicas that start together (any fixed 64-bit number of ours).
_MIGRATION_LOCK = 0x4F4A_4D49_4752_4154
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class NewerDatabase(RuntimeError):
    """The database was migrated by a newer version of the service."""


def is_postgresql_url(database: str) -> bool:
    return database.startswith(("postgresql://", "postgres://"))


class PostgresStore(PendingChanges):
    def __init__(self, url: str, schema: str = "orthanc_jobs", connect_timeout: float = 10) -> None:
        super().__init__()
        if not _IDENTIFIER.fullmatch(schema):
            raise ValueError(f"{schema!r} is not a schema name (lower-case letters, digits, underscores)")
        #: Never set: PostgreSQL keeps its own files sound (the attribute SQLite's store has).
        self.moved_aside: str | None = None
        self._schema = sql.Identifier(schema)
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=4,
            open=False,
            kwargs={"connect_timeout": int(connect_timeout)},
            # PostgreSQL away: a write fails within this long (kept in memory, plugins answered 503), not
            # the pool's default 30 s; a connection a restart of PostgreSQL broke is not handed out.
            timeout=WRITE_TIMEOUT,
            check=ConnectionPool.check_connection,
        )
        self._pool.open(wait=True, timeout=connect_timeout)
        try:
            with self._pool.connection() as db:
                self._migrate(db)
        except BaseException:
            self._pool.close()
            raise
        self._upsert_job = self._upsert("jobs", JOB_COLUMNS, "id")
        self._upsert_server = self._upsert("servers", SERVER_COLUMNS, "url")
        self._delete_job = sql.SQL("DELETE FROM {}.jobs WHERE id = %s").format(self._schema)

    def _migrate(self, db: psycopg.Connection) -> None:
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            db.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(self._schema))
            db.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {}.migrations "
                    "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                ).format(self._schema)
            )
            applied = {
                row[0]
                for row in db.execute(sql.SQL("SELECT version FROM {}.migrations").format(self._schema))
            }
            if applied and max(applied) > SCHEMA_VERSION:
                raise NewerDatabase(
                    f"the schema {self._schema.as_string(db)} is at version {max(applied)}, newer than this "
                    f"job-service's {SCHEMA_VERSION}: run the newer job-service (no downgrades)"
                )
            for version, statements in MIGRATIONS:
                if version in applied:
                    continue
                db.execute(sql.SQL(statements).format(schema=self._schema))
                db.execute(
                    sql.SQL("INSERT INTO {}.migrations (version) VALUES (%s)").format(self._schema),
                    (version,),
                )
                log.info("job history in PostgreSQL: migration %d applied", version)

    def _upsert(self, table: str, columns: tuple[str, ...], key: str) -> sql.Composed:
        return sql.SQL("INSERT INTO {}.{} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}").format(
            self._schema,
            sql.Identifier(table),
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(", ").join(sql.Placeholder() * len(columns)),
            sql.Identifier(key),
            sql.SQL(", ").join(
                sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(column))
                for column in columns
                if column != key
            ),
        )

    def load(self) -> tuple[list[Server], list[Job]]:
        with self._pool.connection() as db:
            server_rows = db.execute(
                sql.SQL("SELECT {} FROM {}.servers").format(
                    sql.SQL(", ").join(map(sql.Identifier, SERVER_COLUMNS)), self._schema
                )
            ).fetchall()
            job_rows = db.execute(
                sql.SQL("SELECT {} FROM {}.jobs").format(
                    sql.SQL(", ").join(map(sql.Identifier, JOB_COLUMNS)), self._schema
                )
            ).fetchall()
        servers = [server_from_row(row, row[-1]) for row in server_rows]  # JSONB: read as a dict
        jobs = [job_from_row(row) for row in job_rows]
        return servers, jobs

    def write(self, jobs: dict[str, Job | None], servers: dict[str, Server]) -> None:
        """Write what ``take_pending`` handed over, in one transaction (from any thread)."""
        if not jobs and not servers:
            return
        upserts = [job_row(job) for job in jobs.values() if job is not None]
        deletes = [(job_id,) for job_id, job in jobs.items() if job is None]
        server_rows = [server_row(s, Jsonb(s.gap) if s.gap is not None else None) for s in servers.values()]
        with self._pool.connection() as db, db.transaction(), db.cursor() as cursor:
            if upserts:
                cursor.executemany(self._upsert_job, upserts)
            if deletes:
                cursor.executemany(self._delete_job, deletes)
            if server_rows:
                cursor.executemany(self._upsert_server, server_rows)

    def close(self) -> None:
        try:
            self.flush()  # nothing after the housekeeper's last flush; a store used on its own: its changes
        finally:
            self._pool.close()

"""The registry's history in PostgreSQL: the database a cluster of Orthanc servers already runs.

Selected by ``ORTHANC_JOBS_DATABASE=postgresql://...``. The service keeps its tables in a schema of its own
(``orthanc_jobs`` by default, ``ORTHANC_JOBS_DATABASE_SCHEMA``), which it creates at start and brings up
to date with numbered migrations, under an advisory lock (replicas starting together migrate once). A
database newer than this service (a downgrade) is refused at start with the reason, never written to.

Writes are gathered in memory (``record``) and written in one transaction by ``write``, from a worker
thread, as with SQLite. With PostgreSQL the service may run as several replicas: each write also appends its
changes to a log (``changes``, numbered in commit order: writers take a lock for the numbering) and notifies
the other replicas, which read the log (``ChangeFeed``) into their own memory and onto their event streams.
One replica leads at a time (``leases``), for the decisions taken for the whole cluster.
"""

import contextlib
import hashlib
import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

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
    (
        2,
        """
        -- A job's Timestamp: an older state written late never replaces a newer one (replicas).
        ALTER TABLE {schema}.jobs ADD COLUMN stamp TEXT NOT NULL DEFAULT '';
        CREATE SEQUENCE {schema}.change_ids;
        CREATE TABLE {schema}.changes (
            id BIGINT PRIMARY KEY,
            replica TEXT NOT NULL,
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            meta BYTEA,
            content BYTEA,
            frame_kind TEXT,
            frame BYTEA,
            written_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE {schema}.log_state (
            single BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (single),
            trimmed_through BIGINT NOT NULL
        );
        INSERT INTO {schema}.log_state (trimmed_through) VALUES (0);
        CREATE TABLE {schema}.leases (
            name TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            term BIGINT NOT NULL,
            expires_at TIMESTAMPTZ NOT NULL
        );
        """,
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]
# Seconds a write waits for a connection (PostgreSQL away) before it fails.
WRITE_TIMEOUT = 5.0
# Serialises the migrations of replicas that start together (any fixed 64-bit number of ours).
_MIGRATION_LOCK = 0x4F4A_4D49_4752_4154
# Taken by each write before it numbers its changes: numbers are handed out in commit order, so that a
# reader that saw change N has seen every change before N.
_LOG_LOCK = 0x4F4A_4348_414E_4745
# Changes kept in the log for replicas that were away (and for event streams that resume); a replica away
# longer reads the tables again.
LOG_KEEP = 100_000
# Events read at start for streams that resume (the event log's window).
FRAMES_AT_START = 10_000
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """One entry of the change log, as read by the replicas."""

    id: int
    replica: str
    kind: str  # job, removed, server, event (a frame alone)
    key: str
    meta: bytes | None
    content: bytes | None
    frame_kind: str | None
    frame: bytes | None

    def job(self) -> Job:
        return job_from_row((self.key, *orjson.loads(self.meta or b"[]"), self.content))

    def server(self) -> Server:
        row = orjson.loads(self.meta or b"[]")
        return server_from_row(tuple(row), row[-1])


@dataclass(frozen=True, slots=True)
class LogPosition:
    """Where the log stood when the tables were read (a consistent snapshot), and its recent events."""

    last_change: int
    trimmed_through: int
    frames: list[tuple[int, str, bytes]]


class NewerDatabase(RuntimeError):
    """The database was migrated by a newer version of the service."""


def is_postgresql_url(database: str) -> bool:
    return database.startswith(("postgresql://", "postgres://"))


class PostgresStore(PendingChanges):
    def __init__(
        self, url: str, schema: str = "orthanc_jobs", connect_timeout: float = 10, replica: str = ""
    ) -> None:
        super().__init__()
        self.url = url
        self.schema = schema
        #: Who writes, in the log: a replica skips its own changes there (its memory has them).
        self.replica = replica
        #: Set by ``load``: the log's position matching what was loaded.
        self.position: LogPosition | None = None
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
            kwargs={
                "connect_timeout": int(connect_timeout),
                # Writes take a lock shared by every replica: a writer that froze or lost its network while
                # holding it (a paused machine) is cut off by PostgreSQL, and no write waits for ever.
                "options": "-c lock_timeout=5s -c statement_timeout=30s "
                "-c idle_in_transaction_session_timeout=15s",
                "keepalives_idle": 10,
                "keepalives_interval": 5,
                "keepalives_count": 3,
            },
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
        # An older state written late never replaces a newer one (by its owner's Timestamp), but the owner's
        # own word replaces what the service presumed (a job failed when its server went silent).
        self._upsert_job = self._upsert("jobs", (*JOB_COLUMNS, "stamp"), "id") + sql.SQL(
            " WHERE jobs.presumed OR jobs.stamp <= EXCLUDED.stamp"
        )
        # A process replaced since is not put back; the last time a server was seen only moves forward.
        self._upsert_server = sql.SQL(
            "INSERT INTO {0}.servers AS known ({1}) VALUES ({2}) ON CONFLICT (url) DO UPDATE SET {3}, "
            "last_seen = GREATEST(known.last_seen, EXCLUDED.last_seen), "
            "stopped = EXCLUDED.stopped OR known.stopped AND known.incarnation = EXCLUDED.incarnation "
            "WHERE known.incarnation = EXCLUDED.incarnation "
            "OR known.registered_at < EXCLUDED.registered_at"
        ).format(
            self._schema,
            sql.SQL(", ").join(map(sql.Identifier, SERVER_COLUMNS)),
            sql.SQL(", ").join(sql.Placeholder() * len(SERVER_COLUMNS)),
            sql.SQL(", ").join(
                sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(column))
                for column in SERVER_COLUMNS
                if column not in ("url", "last_seen", "stopped")
            ),
        )
        self._delete_job = sql.SQL("DELETE FROM {}.jobs WHERE id = %s").format(self._schema)
        self._log_change = sql.SQL(
            "INSERT INTO {0}.changes (id, replica, kind, key, meta, content, frame_kind, frame) "
            "VALUES (nextval({1}), %s, %s, %s, %s, %s, %s, %s)"
        ).format(self._schema, sql.Literal(f"{schema}.change_ids"))
        # A channel name of at most 63 bytes, whatever the schema's name.
        self.channel = "orthanc_jobs_" + hashlib.sha256(schema.encode()).hexdigest()[:16]
        self._lease_lock = threading.Lock()  # a renewal under way ends before the lease is let go

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
        """Every server and job, and (``position``) where the change log stood then: one snapshot."""
        with self._pool.connection() as db, db.transaction():
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            trimmed = self._scalar(db, "SELECT trimmed_through FROM {}.log_state")
            last = self._scalar(db, "SELECT COALESCE(max(id), 0) FROM {}.changes")
            frames = db.execute(
                sql.SQL(
                    "SELECT id, frame_kind, frame FROM {}.changes WHERE frame IS NOT NULL "
                    "ORDER BY id DESC LIMIT %s"
                ).format(self._schema),
                (FRAMES_AT_START,),
            ).fetchall()
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
        frames.reverse()
        # Events before the oldest read may exist: a stream resuming from before it is told to reload.
        horizon = frames[0][0] - 1 if len(frames) == FRAMES_AT_START else max(trimmed, 0)
        self.position = LogPosition(max(last, trimmed), horizon, [(i, k, bytes(f)) for i, k, f in frames])
        return servers, jobs

    def _scalar(self, db: psycopg.Connection, query: str, *args: Any) -> Any:
        row = db.execute(sql.SQL(query).format(self._schema), args or None).fetchone()
        return row[0] if row else None

    def write(self, pending: Pending) -> None:
        """Write what ``take_pending`` handed over, in one transaction (from any thread), with its entries in
        the change log; the other replicas are notified when it commits."""
        if not pending:
            return
        upserts: list[tuple[Any, ...]] = []
        deletes: list[tuple[str]] = []
        changes: list[tuple[Any, ...]] = []  # the log's entries, in order
        for job_id, job in pending.jobs.items():
            frame_kind, frame = pending.frames.get("job:" + job_id, (None, None))
            if job is None:
                deletes.append((job_id,))
                changes.append((self.replica, "removed", job_id, None, None, frame_kind, frame))
            else:
                row = job_row(job)
                upserts.append((*row, job.timestamp))
                changes.append(
                    (self.replica, "job", job_id, orjson.dumps(row[1:-1]), row[-1], frame_kind, frame)
                )
        server_rows = []
        for server in pending.servers.values():
            server_rows.append(server_row(server, Jsonb(server.gap) if server.gap is not None else None))
            frame_kind, frame = pending.frames.get("server:" + server.url, (None, None))
            meta = orjson.dumps(server_row(server, server.gap))
            changes.append((self.replica, "server", server.url, meta, None, frame_kind, frame))
        for key, (frame_kind, frame) in pending.frames.items():
            # An event that changes nothing kept (a job told stuck, an action's progress): streamed only.
            kind, _, name = key.partition(":")
            if (kind == "job" and name not in pending.jobs) or kind == "action":
                changes.append((self.replica, "event", key, None, None, frame_kind, frame))
        with self._pool.connection() as db, db.transaction(), db.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_LOG_LOCK,))
            if upserts:
                cursor.executemany(self._upsert_job, upserts)
            if deletes:
                cursor.executemany(self._delete_job, deletes)
            if server_rows:
                cursor.executemany(self._upsert_server, server_rows)
            cursor.executemany(self._log_change, changes)
            cursor.execute("SELECT pg_notify(%s, '')", (self.channel,))

    def trim_log(self, keep: int = LOG_KEEP) -> int:
        """Forget the oldest changes of the log beyond ``keep`` (the leader's upkeep); how many went."""
        with self._pool.connection() as db, db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_LOG_LOCK,))
            last = self._scalar(db, "SELECT COALESCE(max(id), 0) FROM {}.changes")
            through = last - keep
            if through <= self._scalar(db, "SELECT trimmed_through FROM {}.log_state"):
                return 0
            cursor = db.execute(
                sql.SQL("DELETE FROM {}.changes WHERE id <= %s").format(self._schema), (through,)
            )
            db.execute(
                sql.SQL("UPDATE {}.log_state SET trimmed_through = %s").format(self._schema), (through,)
            )
            return cursor.rowcount

    def hold_lease(self, holder: str, seconds: float, name: str = "leader") -> int | None:
        """Take the lease, or renew it if ``holder`` has it; its term if held, None if another holds it."""
        with self._lease_lock, self._pool.connection() as db:
            row = db.execute(
                sql.SQL(
                    "INSERT INTO {0}.leases AS lease (name, holder, term, expires_at) "
                    "VALUES (%(name)s, %(holder)s, 1, now() + make_interval(secs => %(seconds)s)) "
                    "ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, "
                    "term = lease.term + CASE WHEN lease.holder = EXCLUDED.holder THEN 0 ELSE 1 END, "
                    "expires_at = EXCLUDED.expires_at "
                    "WHERE lease.holder = EXCLUDED.holder OR lease.expires_at < now() "
                    "RETURNING term"
                ).format(self._schema),
                {"name": name, "holder": holder, "seconds": seconds},
            ).fetchone()
        return None if row is None else int(row[0])

    def release_lease(self, holder: str, name: str = "leader") -> None:
        """Let the lease go at once (a replica that stops): another takes it without waiting for it to end."""
        with self._lease_lock, self._pool.connection() as db:
            db.execute(
                sql.SQL(
                    "UPDATE {}.leases SET expires_at = now() - interval '1 second' "
                    "WHERE name = %s AND holder = %s"
                ).format(self._schema),
                (name, holder),
            )

    def close(self) -> None:
        try:
            self.flush()  # nothing after the housekeeper's last flush; a store used on its own: its changes
        finally:
            self._pool.close()


class ChangeFeed:
    """A replica's view of the change log: a connection of its own that listens for the writers'
    notifications and reads what was added (on the event loop)."""

    def __init__(self, url: str, schema: str, channel: str, connect_timeout: float = 5) -> None:
        self._url = url
        self._schema = sql.Identifier(schema)
        self._channel = sql.Identifier(channel)
        self._connect_timeout = connect_timeout
        self._db: psycopg.AsyncConnection[Any] | None = None
        self._read = sql.SQL(
            "SELECT id, replica, kind, key, meta, content, frame_kind, frame FROM {}.changes "
            "WHERE id > %s ORDER BY id LIMIT %s"
        ).format(self._schema)

    async def connect(self) -> None:
        """Connect and listen: a change committed from now on is notified."""
        await self.close()
        self._db = await psycopg.AsyncConnection.connect(
            self._url, autocommit=True, connect_timeout=int(self._connect_timeout)
        )
        await self._db.execute(sql.SQL("LISTEN {}").format(self._channel))

    async def wait(self, timeout: float) -> None:
        """Until a change is notified, or ``timeout`` seconds."""
        assert self._db is not None
        async for _ in self._db.notifies(timeout=timeout, stop_after=1):
            pass

    async def read_since(self, position: int, limit: int) -> list[ChangeRecord]:
        assert self._db is not None
        cursor = await self._db.execute(self._read, (position, limit))
        return [
            ChangeRecord(
                id,
                replica,
                kind,
                key,
                bytes(meta) if meta is not None else None,
                bytes(content) if content is not None else None,
                frame_kind,
                bytes(frame) if frame is not None else None,
            )
            for id, replica, kind, key, meta, content, frame_kind, frame in await cursor.fetchall()
        ]

    async def trimmed_through(self) -> int:
        assert self._db is not None
        cursor = await self._db.execute(
            sql.SQL("SELECT trimmed_through FROM {}.log_state").format(self._schema)
        )
        row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(Exception):
                await db.close()

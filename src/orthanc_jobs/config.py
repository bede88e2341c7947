"""Every setting of the job-service, its default and its environment variable (``ORTHANC_JOBS_*``)."""

import socket

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from orthanc_jobs.core.model import normalize_server_url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORTHANC_JOBS_", extra="ignore")

    secret: SecretStr = Field(
        default=SecretStr(""),
        description="Shared secret of the reporter plugins (ORTHANC_JOBS_SECRET). Required.",
    )
    host: str = Field(default="127.0.0.1", description="Address the service listens on.")
    port: int = Field(default=8050, ge=0, le=65535, description="Port the service listens on.")

    poll_interval: float = Field(default=1.0, gt=0, description="Seconds between polls of unfinished jobs.")
    resync_interval: float = Field(
        default=30.0, gt=0, description="Seconds between full resynchronisations of each server."
    )
    lookup_timeout: float = Field(
        default=2.0, gt=0, description="Seconds to ask every live server for a job id not yet known."
    )
    request_timeout: float = Field(default=10.0, gt=0, description="Timeout of requests to Orthanc servers.")
    auth_cache_seconds: float = Field(
        default=10.0,
        ge=0,
        description="How long the servers' answer on an Authorization header (accepted or refused) is kept.",
    )
    not_responding_after: float = Field(
        default=10.0, gt=0, description="Silence (s) after which a server is 'not-responding'."
    )
    stopped_after: float = Field(
        default=60.0, gt=0, description="Silence (s) after which a server is 'stopped'."
    )
    database: str = Field(
        default="orthanc-jobs.sqlite3",
        description="Where the job history and the servers are kept: a SQLite file (':memory:': nothing "
        "kept), or a PostgreSQL database, postgresql://user:password@host:port/database.",
    )
    replica_name: str = Field(
        default="",
        description="This replica's name, in logs, /healthz and the change log (empty: host name and port). "
        "Replicas share a PostgreSQL database; each needs its own name.",
    )
    database_schema: str = Field(
        default="orthanc_jobs",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="With PostgreSQL: the schema of the service's tables (created at start).",
    )
    history_max_age: float = Field(
        default=7 * 24 * 3600,
        gt=0,
        description="Seconds a finished job stays in the history once its server forgot it.",
    )
    history_max_jobs: int = Field(
        default=100_000, gt=0, description="Most jobs kept in all; the oldest history goes first."
    )
    hide_lost_after: float | None = Field(
        default=None,
        gt=0,
        description="Seconds after which finished jobs of a stopped or restarted server leave the listings "
        "(still readable by id). Unset: they stay listed, flagged.",
    )
    stuck_after: float = Field(
        default=600.0,
        gt=0,
        description="Seconds a running job's progress may stay still before it is flagged stuck (its Server "
        "field, /metrics, the event stream, webhooks, the dashboard).",
    )
    bulk_action_rate: float = Field(
        default=20.0,
        gt=0,
        le=1000,
        description="Jobs per second an action on many jobs (POST /orthanc-jobs/actions) is sent to, at most "
        "4 at once: the owners are the hospital's servers.",
    )
    webhooks: SecretStr = Field(
        default=SecretStr(""),
        description="Webhooks that receive alerts (a job's failure, a stuck job, a server not responding or "
        "stopped), as a JSON list of {Name, Url, Secret, Events, Types, Servers}; checked at start.",
    )
    webhooks_file: str = Field(
        default="",
        description="A JSON file holding a list of webhooks, as ORTHANC_JOBS_WEBHOOKS (both: all of them).",
    )
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0, description="Largest request body accepted.")
    body_timeout: float = Field(
        default=30.0, gt=0, description="Seconds a request's body may take to arrive (then 408)."
    )
    header_timeout: float = Field(
        default=10.0, gt=0, description="Seconds a request's headers may take to arrive (then closed)."
    )
    max_connections: int = Field(
        default=10_000,
        gt=0,
        description="Most connections open at once (fewer if the open files limit is lower); past it, "
        "the connection that waited longest for its headers is closed.",
    )
    max_requests_in_progress: int = Field(
        default=2_000,
        gt=0,
        description="Most public requests in progress at once (then 503); the plugins' and health routes "
        "are not counted.",
    )
    allowed_server_urls: str = Field(
        default="",
        description="Comma-separated URLs of the servers that may register (scheme, host, port and path, "
        "exactly; empty: any). Callers' credentials are sent to registered servers: declare them.",
    )

    @field_validator("allowed_server_urls")
    @classmethod
    def _each_allowed_url_is_a_server_url(cls, value: str) -> str:
        for url in value.split(","):
            if url.strip():
                normalize_server_url(url)  # a ValueError says which one, at start
        return value

    @property
    def replica(self) -> str:
        return self.replica_name or f"{socket.gethostname()}:{self.port}"

    @property
    def allowed_servers(self) -> frozenset[str] | None:
        """The declared servers' URLs, normalised (None: any server may register)."""
        urls = frozenset(
            normalize_server_url(url) for url in self.allowed_server_urls.split(",") if url.strip()
        )
        return urls or None

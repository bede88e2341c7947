"""Every setting of the job-service, its default and its environment variable (``ORTHANC_JOBS_*``)."""

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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
        default=10.0, ge=0, description="How long an accepted Authorization header is trusted."
    )
    not_responding_after: float = Field(
        default=10.0, gt=0, description="Silence (s) after which a server is 'not-responding'."
    )
    stopped_after: float = Field(
        default=60.0, gt=0, description="Silence (s) after which a server is 'stopped'."
    )
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024, gt=0, description="Largest request body accepted from a plugin."
    )

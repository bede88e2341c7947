from dataclasses import dataclass

from fastapi import Request

from orthanc_jobs.api.auth import ClusterAuthenticator, PluginSecret
from orthanc_jobs.api.browsers import refuse_cross_site
from orthanc_jobs.config import Settings
from orthanc_jobs.core.eventlog import EventLog
from orthanc_jobs.core.housekeeping import Housekeeper
from orthanc_jobs.core.metrics import Metrics
from orthanc_jobs.core.orthanc import OrthancClient
from orthanc_jobs.core.poller import Poller
from orthanc_jobs.core.registry import Registry


@dataclass
class Services:
    """Everything a route needs, built once per application."""

    settings: Settings
    registry: Registry
    client: OrthancClient
    poller: Poller
    authenticator: ClusterAuthenticator
    plugin_secret: PluginSecret
    housekeeper: Housekeeper
    events: EventLog
    metrics: Metrics
    #: Where the history file was moved at start, because it was damaged (None: it was not).
    history_moved_aside: str | None = None


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


async def require_cluster_credentials(request: Request) -> Services:
    found = services(request)
    await found.authenticator.check(request.headers.get("authorization"))
    return found


async def require_cluster_change(request: Request) -> Services:
    """For routes that change a job: the cluster's credentials, and not a page of another site."""
    found = await require_cluster_credentials(request)
    refuse_cross_site(request)
    return found


@dataclass
class PluginCaller:
    """A plugin's request: the server it speaks for, its secret checked."""

    services: Services
    server_url: str


async def require_plugin_secret(request: Request) -> PluginCaller:
    """The plugin names its server (``X-Orthanc-Jobs-Server``) and carries that server's own secret: checked
    from the headers alone, before anything of the body is read (401 without a secret, 403 otherwise)."""
    found = services(request)
    return PluginCaller(found, found.plugin_secret.check(request))

import asyncio
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from orthanc_jobs.api.auth import ClusterAuthenticator, PluginSecret
from orthanc_jobs.api.browsers import refuse_cross_site
from orthanc_jobs.config import Settings
from orthanc_jobs.core.bulk import BulkActions
from orthanc_jobs.core.eventlog import EventLog
from orthanc_jobs.core.housekeeping import Housekeeper
from orthanc_jobs.core.lookups import Lookups
from orthanc_jobs.core.metrics import Metrics
from orthanc_jobs.core.orthanc import OrthancClient
from orthanc_jobs.core.poller import Poller
from orthanc_jobs.core.queries import QueryOwners
from orthanc_jobs.core.registry import Registry
from orthanc_jobs.core.replication import Replication
from orthanc_jobs.core.webhooks import Webhooks


@dataclass
class Services:
    """Everything a route needs, built once per application."""

    settings: Settings
    registry: Registry
    client: OrthancClient
    poller: Poller
    lookups: Lookups
    #: Which server keeps each query handle (``/queries/{id}``).
    query_owners: QueryOwners
    authenticator: ClusterAuthenticator
    plugin_secret: PluginSecret
    housekeeper: Housekeeper
    events: EventLog
    metrics: Metrics
    #: Actions on many jobs at once (api/actions.py).
    bulk_actions: BulkActions
    #: Alerts by webhook (core/webhooks.py), sent by the leading replica.
    webhooks: Webhooks
    #: Where the history file was moved at start, because it was damaged (None: it was not).
    history_moved_aside: str | None = None
    #: With PostgreSQL: how this replica follows the others (None: one service, SQLite).
    replication: Replication | None = None
    #: Held while a modality or a peer is declared on every server (api/modalities.py).
    declarations: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: /readyz answered 200 once since the start (api/service.py).
    was_ready: bool = False

    def is_leader(self) -> bool:
        return self.replication is None or self.replication.is_leading()


def services_of(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


async def require_credentials(request: Request) -> Services:
    """For every public route: the cluster's servers accept the caller's credentials."""
    services = services_of(request)
    await services.authenticator.check(request.headers.get("authorization"))
    return services


async def require_change(request: Request) -> Services:
    """For routes that change a job: the cluster's credentials, and not a page of another site."""
    services = await require_credentials(request)
    refuse_cross_site(request)
    return services


#: A public route's services, once the caller's credentials are accepted.
Authorized = Annotated[Services, Depends(require_credentials)]
#: A route that changes a job: the credentials, and not from a page of another site.
AuthorizedChange = Annotated[Services, Depends(require_change)]


@dataclass
class PluginCaller:
    """A plugin's request: the server it speaks for, its secret checked."""

    services: Services
    server_url: str


async def require_plugin_secret(request: Request) -> PluginCaller:
    """The plugin names its server (``X-Orthanc-Jobs-Server``) and carries that server's own secret: checked
    from the headers alone, before anything of the body is read (401 without a secret, 403 otherwise)."""
    services = services_of(request)
    return PluginCaller(services, services.plugin_secret.check(request))

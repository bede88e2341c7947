"""Builds the ASGI application: registry, Orthanc client, poller and routes."""

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from orthanc_jobs import INTERNAL_PREFIX, __version__
from orthanc_jobs.api import actions, export, jobs, modalities, plugins, queries, service, stats
from orthanc_jobs.api.auth import ClusterAuthenticator, PluginSecret
from orthanc_jobs.api.browsers import SecurityHeaders
from orthanc_jobs.api.context import Services
from orthanc_jobs.api.fast import Heartbeats, JobReads, JobServiceApp
from orthanc_jobs.api.limits import InProgress, RequestLimits
from orthanc_jobs.api.responses import describe_problems, error_response, status_error
from orthanc_jobs.config import Settings
from orthanc_jobs.core.bulk import BulkActions
from orthanc_jobs.core.changes import Change, JobChanged
from orthanc_jobs.core.errors import OrthancJobsError
from orthanc_jobs.core.eventlog import EventLog
from orthanc_jobs.core.housekeeping import Housekeeper
from orthanc_jobs.core.lookups import Lookups
from orthanc_jobs.core.metrics import Metrics
from orthanc_jobs.core.orthanc import OrthancClient
from orthanc_jobs.core.poller import Poller
from orthanc_jobs.core.queries import QueryOwners
from orthanc_jobs.core.registry import Registry
from orthanc_jobs.core.replication import Leadership, Replication
from orthanc_jobs.core.store import Store, open_store
from orthanc_jobs.core.store.postgres import PostgresStore
from orthanc_jobs.core.webhooks import Webhooks, load_webhooks
from orthanc_jobs.core.wire import frame_for

log = logging.getLogger(__name__)


def build_services(
    settings: Settings, store: Store | None = None, client: OrthancClient | None = None
) -> Services:
    # Checked first: a mistake in them stops the start, before anything is opened.
    webhook_definitions = load_webhooks(settings.webhooks.get_secret_value(), settings.webhooks_file)
    # This process, in the change log and the lease: a replica restarted, or two given the same name by
    # mistake, are not taken for one another.
    identity = f"{settings.replica}/{uuid.uuid4().hex[:8]}"
    store = store or open_store(settings.database, settings.database_schema, replica=identity)
    replication: Replication | None = None

    def leading() -> bool:
        return replication is None or replication.is_leading()

    registry = Registry(
        store,
        not_responding_after=settings.not_responding_after,
        stopped_after=settings.stopped_after,
        hide_lost_after=settings.hide_lost_after,
        stuck_after=settings.stuck_after,
        leading=leading,
    )
    client = client or OrthancClient(timeout=settings.request_timeout)
    moved_aside = getattr(store, "moved_aside", None)
    metrics = Metrics(registry, history_moved_aside=moved_aside is not None)
    registry.subscribers.append(metrics.record)
    poller = Poller(
        registry,
        client,
        poll_interval=settings.poll_interval,
        resync_interval=settings.resync_interval,
        poll_duration=metrics.poll_duration,
        leading=leading,
    )
    lookups = Lookups(
        registry,
        client,
        timeout=settings.lookup_timeout,
        rounds=metrics.lookup_rounds,
        unknown_jobs=metrics.unknown_jobs,
    )
    metrics.pools_replaced.set_function(lambda: client.pools_replaced)
    events = EventLog()
    webhooks = Webhooks(webhook_definitions, registry, metrics, replica=settings.replica, leading=leading)
    registry.subscribers.append(webhooks.notice)
    replication = None
    if isinstance(store, PostgresStore):
        # Replicas stream the change log's events, their own included, once written (core/replication.py).
        store.framer = lambda change: frame_for(registry, change)
        replication = Replication(
            store,
            registry,
            events,
            Leadership(store, store.replica),
            on_new_server=poller.schedule_resync,
            # A job another replica changed: the leader alerts for it as for its own.
            on_installed_job=lambda job, previous: webhooks.notice(JobChanged.of(job, previous)),
        )
    else:
        registry.subscribers.append(lambda change: publish(events, registry, change))
    metrics.leader.set_function(lambda: float(leading()))
    metrics.change_log_followed.set_function(lambda: float(replication is None or replication.connected))
    return Services(
        settings=settings,
        registry=registry,
        client=client,
        poller=poller,
        lookups=lookups,
        query_owners=QueryOwners(
            registry, client, timeout=settings.lookup_timeout, rounds=metrics.query_lookup_rounds
        ),
        authenticator=ClusterAuthenticator(
            registry, client, settings.auth_cache_seconds, check_timeout=settings.lookup_timeout
        ),
        plugin_secret=PluginSecret(settings.secret.get_secret_value()),
        housekeeper=Housekeeper(
            registry,
            store,
            liveness_interval=min(1.0, settings.not_responding_after / 4),
            history_max_age=settings.history_max_age,
            history_max_jobs=settings.history_max_jobs,
            leading=leading,
            trim_log=store.trim_log if isinstance(store, PostgresStore) else None,
            current=lambda: replication is None or replication.is_current(),
        ),
        events=events,
        metrics=metrics,
        bulk_actions=BulkActions(registry, rate=settings.bulk_action_rate),
        webhooks=webhooks,
        history_moved_aside=moved_aside,
        replication=replication,
    )


def publish(events: EventLog, registry: Registry, change: Change) -> None:
    """A registry change, as the event stream tells it (in the same JSON as the API's answers)."""
    frame = frame_for(registry, change)
    if frame is not None:
        events.publish(*frame)


def create_app(settings: Settings | None = None, services: Services | None = None) -> JobServiceApp:
    services = services or build_services(settings or Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services.replication is not None:
            services.replication.start()
        services.poller.start()
        services.housekeeper.start()
        services.webhooks.start()
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            services.events.close_all()
            await services.poller.stop()
            await services.bulk_actions.stop()
            services.lookups.stop()
            services.query_owners.stop()
            if services.replication is not None:
                await services.replication.stop()
            await services.housekeeper.stop()
            await services.webhooks.stop()
            await services.client.aclose()

    app = JobServiceApp(
        title="orthanc-jobs",
        version=__version__,
        description="The jobs of a cluster of Orthanc servers, answered like one Orthanc.",
        lifespan=lifespan,
        # The description is served under the cluster's credentials (api/service.py); no page that would
        # fetch its scripts from the internet.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        redirect_slashes=False,
    )
    app.state.services = services
    app.include_router(jobs.router)
    app.include_router(export.router)
    app.include_router(queries.router)
    app.include_router(modalities.router)
    app.include_router(service.router)
    app.include_router(actions.router)
    app.include_router(stats.router)
    app.include_router(service.health_router)
    app.include_router(plugins.router)

    @app.exception_handler(OrthancJobsError)
    async def on_error(request: Request, error: OrthancJobsError) -> Response:
        return error_response(request, error)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, error: RequestValidationError) -> Response:
        return status_error(request, 400, f"invalid request: {describe_problems(error.errors())}")

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, error: HTTPException) -> Response:
        if error.status_code == 404 and not request.url.path.startswith(INTERNAL_PREFIX):
            # No such route: as Orthanc, credentials first (an unknown path tells nothing to a stranger).
            try:
                await services.authenticator.check(request.headers.get("authorization"))
            except OrthancJobsError as refused:
                return error_response(request, refused)
        return status_error(request, error.status_code, str(error.detail), dict(error.headers or {}))

    settings = services.settings
    requests = InProgress(settings.max_requests_in_progress)
    # Innermost first.
    app.add_middleware(
        RequestLimits,
        max_bytes=settings.max_body_bytes,
        body_timeout=settings.body_timeout,
        requests=requests,
    )
    app.add_middleware(SecurityHeaders)
    app.job_reads = JobReads(services, requests)
    app.heartbeats = Heartbeats(services, settings.max_body_bytes, settings.body_timeout)
    return app

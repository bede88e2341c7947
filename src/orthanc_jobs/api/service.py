"""The job-service's own routes, under its prefix: the cluster's servers, health."""

from fastapi import APIRouter, Request
from fastapi.responses import Response

from orthanc_jobs import SERVICE_PREFIX, __version__
from orthanc_jobs.api.public import Cluster
from orthanc_jobs.api.responses import OrjsonResponse
from orthanc_jobs.registry import orthanc_timestamp

router = APIRouter(prefix=SERVICE_PREFIX, tags=["Job-service"])
health_router = APIRouter(tags=["Health"])


@router.get("/servers", summary="The Orthanc servers of the cluster, their status and job counts")
async def list_servers(cluster: Cluster) -> Response:
    registry = cluster.registry
    return OrjsonResponse(
        [
            {
                "Name": server.name,
                "Url": server.url,
                "Status": registry.server_status(server),
                "Incarnation": server.incarnation,
                "OrthancVersion": server.orthanc_version,
                "RegisteredAt": orthanc_timestamp(server.registered_at),
                "LastSeen": orthanc_timestamp(server.last_seen),
                "LastResync": orthanc_timestamp(server.last_resync) if server.last_resync else None,
                "Jobs": registry.job_counts(server),
            }
            for server in registry.servers()
        ]
    )


@router.get("/", summary="What this service is")
async def about(cluster: Cluster) -> Response:
    return OrjsonResponse({"Service": "orthanc-jobs", "Version": __version__, "Jobs": len(cluster.registry)})


@router.get("/openapi.json", summary="The OpenAPI description of this service")
async def openapi(request: Request, cluster: Cluster) -> Response:
    return OrjsonResponse(request.app.openapi())


@health_router.get("/healthz", summary="Liveness, without credentials and without job data")
async def healthz() -> Response:
    return OrjsonResponse({"Status": "ok"})

"""Modalities and peers (``/modalities``, ``/peers`` and all under them) for the whole cluster.

Orthanc reads its modalities and peers into memory when it starts (from its configuration, or from the
database with ``DicomModalitiesInDatabase`` / ``OrthancPeersInDatabase``) and changes them only when it is
told (``PUT /modalities/{name}``), and keeps them in the database per server (not shared): declared
through a load balancer, a modality would be known to one server only, and a query of it would answer 404
on the others. So a declaration or a removal is told to every server that is not stopped, and what runs
under them (a query, a store, an echo) goes to one live server, in turn; a query made there is remembered
as that server's (core/queries.py).
"""

import itertools
import re
from collections.abc import AsyncIterable

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import Response

from orthanc_jobs.api.browsers import refuse_cross_site
from orthanc_jobs.api.context import Authorized, Services
from orthanc_jobs.api.queries import relay, send_request
from orthanc_jobs.api.responses import MAX_ERROR_BODY, error_from_owner
from orthanc_jobs.core.errors import BadRequest, ServerUnavailable
from orthanc_jobs.core.model import Server, ServerStatus
from orthanc_jobs.core.orthanc import OrthancError, OrthancUnreachable

router = APIRouter(tags=["Orthanc-compatible modalities and peers"])

# A modality's or a peer's name, as Orthanc allows it (letters, digits, '-' and '_'): nothing else, so that
# no name can be a path of its own ('..') once forwarded.
_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")
# What may follow /modalities/{name}/: Orthanc's words (query, store, echo, move, get, find-worklist...).
_TAIL = re.compile(r"[A-Za-z0-9_-]{1,64}(/[A-Za-z0-9_-]{1,64}){0,3}")
# A DICOM file sent as it is (its body can be as large as an instance): streamed on, never held, and
# past the service's body limit (api/limits.py).
_STRAIGHT = "store-straight"
STORE_STRAIGHT_PATH = re.compile(f"/(modalities|peers)/{_NAME.pattern}/{_STRAIGHT}")
_turns = itertools.count()


def _path(kind: str, name: str, tail: str = "") -> str:
    if _NAME.fullmatch(name) is None:
        raise BadRequest(f"{name!r} is not the name of one of the {kind} (letters, digits, '-', '_')")
    if tail and _TAIL.fullmatch(tail) is None:
        raise BadRequest(f"{tail!r} is not a path under /{kind}/{{name}}")
    return f"/{kind}/{name}" + (f"/{tail}" if tail else "")


async def _on_one(request: Request, services: Services, path: str) -> Response:
    """Sent to one live server, in turn; a read goes on to the next server if it could not be sent."""
    if request.method != "GET":
        refuse_cross_site(request)
    servers = services.registry.live_servers()
    if not servers:
        raise ServerUnavailable("no Orthanc server of the cluster is alive")
    start = next(_turns) % len(servers)
    body: bytes | AsyncIterable[bytes] = b""
    if request.method == "POST":
        body = request.stream() if path.endswith("/" + _STRAIGHT) else await request.body()
    for server in servers[start:] + servers[:start]:
        try:
            answer = await send_request(services, server, request, path, body)
        except OrthancUnreachable:
            if request.method == "GET":  # a read goes on to the next server
                continue
            raise ServerUnavailable(f"Orthanc server {server.name} did not answer") from None
        except OrthancError:
            raise ServerUnavailable(f"Orthanc server {server.name} did not answer") from None
        return await relay(request, services, server, answer)
    raise ServerUnavailable("no Orthanc server of the cluster answered")


async def _on_every(request: Request, services: Services, path: str) -> Response:
    """A declaration or a removal, told to every live server, one after the other: each server writes the
    whole list into the shared database, and two writing it at once make one of them fail ("Error with the
    database engine", seen on 1.10.1 and 1.12.7). If one refuses, its answer is the caller's (the others
    would refuse alike); if one does not answer, 503: the change may be missing there, and may be sent
    again (PUT and DELETE do the same thing twice). One declaration at a time, per replica."""
    refuse_cross_site(request)
    registry = services.registry
    # Every server that is not stopped: one that does not answer now is missed, and the caller told so.
    servers = [s for s in registry.servers() if registry.server_status(s) is not ServerStatus.STOPPED]
    if not servers:
        raise ServerUnavailable("no Orthanc server of the cluster is running")
    body = await request.body() if request.method == "PUT" else b""
    async with services.declarations:  # two declarations at once would write at once too
        return await _tell_each(request, services, servers, path, body)


async def _tell_each(
    request: Request, services: Services, servers: list[Server], path: str, body: bytes
) -> Response:
    first: httpx.Response | None = None
    absent: httpx.Response | None = None
    missed = []
    for server in servers:
        try:
            answer = await send_request(services, server, request, path, body, stream=False)
        except OrthancError:
            missed.append(server.name)
            continue
        if request.method == "DELETE" and answer.status_code == 404:
            absent = answer  # not there (declared on another server alone): removed already
            continue
        if answer.status_code >= 400:
            return error_from_owner(request, answer, answer.content[:MAX_ERROR_BODY])
        first = first or answer
    if missed:
        raise ServerUnavailable(f"{', '.join(missed)} did not answer: the change may be missing there")
    if first is None and absent is not None:
        return error_from_owner(request, absent, absent.content[:MAX_ERROR_BODY])  # on no server at all
    assert first is not None
    return Response(first.content, first.status_code, media_type=first.headers.get("content-type"))


def _routes(kind: str) -> None:
    @router.get(f"/{kind}", summary=f"The {kind}, as every server has them")
    async def listing(request: Request, services: Authorized) -> Response:
        return await _on_one(request, services, f"/{kind}")

    @router.get(f"/{kind}/{{name}}", summary=f"One of the {kind}")
    async def read(request: Request, name: str, services: Authorized) -> Response:
        return await _on_one(request, services, _path(kind, name))

    @router.put(f"/{kind}/{{name}}", summary=f"Declare one of the {kind} on every server")
    async def declare(request: Request, name: str, services: Authorized) -> Response:
        return await _on_every(request, services, _path(kind, name))

    @router.delete(f"/{kind}/{{name}}", summary=f"Remove one of the {kind} from every server")
    async def remove(request: Request, name: str, services: Authorized) -> Response:
        return await _on_every(request, services, _path(kind, name))

    @router.get(f"/{kind}/{{name}}/{{tail:path}}", summary=f"Under one of the {kind}, on one server")
    @router.post(f"/{kind}/{{name}}/{{tail:path}}", summary=f"Query, store, echo... one of the {kind}")
    async def under(request: Request, name: str, tail: str, services: Authorized) -> Response:
        return await _on_one(request, services, _path(kind, name, tail))


for _kind in ("modalities", "peers"):
    _routes(_kind)

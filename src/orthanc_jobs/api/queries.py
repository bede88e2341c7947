"""Orthanc's ``/queries`` routes for the whole cluster: each request about a query handle goes to the
server whose process ran the query (core/queries.py), with the caller's own credentials, and its answer
comes back unchanged. A retrieve creates an ordinary job of that server, followed as every job is."""

import asyncio
import re
from collections.abc import AsyncIterable

import httpx
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from orthanc_jobs.api.browsers import refuse_cross_site
from orthanc_jobs.api.context import Authorized, Services
from orthanc_jobs.api.responses import MAX_ERROR_BODY, OUTPUT_HEADERS, error_from_owner, raw_json
from orthanc_jobs.core.errors import BadRequest, NotFound, ServerUnavailable
from orthanc_jobs.core.model import Server, is_job_id
from orthanc_jobs.core.orthanc import OrthancError

router = APIRouter(tags=["Orthanc-compatible query/retrieve API"])

# A synchronous retrieve (C-MOVE or C-GET of a whole query) answers once its transfer is over.
QUERY_TIMEOUT = 3600.0
# What may follow /queries/{id}/: Orthanc's words (answers, retrieve, query-studies...) and answer indexes.
_TAIL = re.compile(r"[A-Za-z0-9_-]{1,64}(/[A-Za-z0-9_-]{1,64}){0,5}")
# A new query made from an answer (POST .../answers/{n}/query-studies) names itself in its answer.
_QUERY_PATH = re.compile(r"/queries/([0-9a-fA-F-]{36})")


class UnknownQuery(NotFound):
    pass


@router.get("/queries", summary="The query handles of every server of the cluster")
@router.get("/queries/", include_in_schema=False)
async def list_queries(request: Request, services: Authorized) -> Response:
    servers = services.registry.live_servers()
    authorization = request.headers.get("authorization")
    answers = await asyncio.gather(
        *(services.client.send(server, "GET", "/queries", authorization) for server in servers),
        return_exceptions=True,
    )
    handles: list[str] = []
    answered = 0
    for server, answer in zip(servers, answers, strict=True):
        if isinstance(answer, BaseException):
            continue  # a server that does not answer has no handle anyone can use now
        answered += 1
        if answer.status_code in (401, 403):
            return error_from_owner(request, answer, answer.content[:MAX_ERROR_BODY])
        try:
            ids = orjson.loads(answer.content) if answer.status_code == 200 else []
        except orjson.JSONDecodeError:
            ids = []
        for query_id in ids if isinstance(ids, list) else []:
            if isinstance(query_id, str) and is_job_id(query_id):
                services.query_owners.remember(query_id, server)
                handles.append(query_id)
    if servers and not answered:
        raise ServerUnavailable("no Orthanc server of the cluster answered")
    return raw_json(orjson.dumps(handles))


@router.get("/queries/{query_id}", summary="A query, on the server that ran it")
@router.post("/queries/{query_id}", include_in_schema=False)  # Orthanc's 405, from its owner
@router.delete("/queries/{query_id}", summary="Forget a query, on the server that ran it")
async def query(request: Request, query_id: str, services: Authorized) -> Response:
    return await _forward(request, services, query_id, "")


@router.get("/queries/{query_id}/{tail:path}", summary="A query's answers, level, modality, content")
@router.post("/queries/{query_id}/{tail:path}", summary="Retrieve a query or answer; query from an answer")
@router.delete("/queries/{query_id}/{tail:path}", include_in_schema=False)  # Orthanc's 405, from its owner
async def query_tail(request: Request, query_id: str, tail: str, services: Authorized) -> Response:
    if _TAIL.fullmatch(tail) is None:
        raise BadRequest(f"{tail!r} is not a path under a query")
    return await _forward(request, services, query_id, "/" + tail)


async def _forward(request: Request, services: Services, query_id: str, tail: str) -> Response:
    if request.method != "GET":
        refuse_cross_site(request)
    if not is_job_id(query_id):
        raise UnknownQuery(f"{query_id!r} is not a query id")
    owner = await services.query_owners.find(query_id)
    if owner is None:
        raise UnknownQuery(f"unknown query {query_id}")
    body = await request.body() if request.method == "POST" else b""
    try:
        answer = await send_request(services, owner, request, f"/queries/{query_id}{tail}", body)
    except OrthancError as error:
        raise ServerUnavailable(f"Orthanc server {owner.name} did not answer") from error
    if not tail and (answer.status_code == 404 or (request.method == "DELETE" and answer.status_code < 400)):
        services.query_owners.forget(query_id)  # deleted, or gone from its server's last QueryRetrieveSize
    return await relay(request, services, owner, answer)


async def send_request(
    services: Services,
    server: Server,
    request: Request,
    path: str,
    body: bytes | AsyncIterable[bytes],
    stream: bool = True,
) -> httpx.Response:
    """The caller's request to ``server`` at ``path``: its method, credentials, query string, body type and
    ``Accept``; its answer streamed (unless ``stream`` is False: read whole). A POST (a retrieve, a C-MOVE,
    a C-STORE) lasts as long as its transfer; the rest waits no longer than any other request."""
    return await services.client.send(
        server,
        request.method,
        path,
        request.headers.get("authorization"),
        body,
        stream,
        query=request.url.query.encode("latin-1"),
        content_type=request.headers.get("content-type"),
        accept=request.headers.get("accept"),
        timeout=QUERY_TIMEOUT if request.method == "POST" else None,
    )


async def relay(request: Request, services: Services, server: Server, answer: httpx.Response) -> Response:
    """``server``'s streamed answer, to the caller: a GET's body streamed on; an error (small) as JSON; what
    a POST made (a job, a query: small JSON) read whole, a query it names remembered as ``server``'s."""
    headers = {name: answer.headers[name] for name in OUTPUT_HEADERS if name in answer.headers}
    if answer.status_code < 400 and request.method == "GET":
        closing = BackgroundTask(answer.aclose)
        return StreamingResponse(answer.aiter_raw(), answer.status_code, headers, background=closing)
    try:
        content = await answer.aread()
    finally:
        await answer.aclose()
    if answer.status_code >= 400:
        return error_from_owner(request, answer, content[:MAX_ERROR_BODY])
    remember_new_query(services, server, content)
    headers.pop("content-length", None)  # the Response counts the bytes itself
    return Response(content, answer.status_code, headers)


def remember_new_query(services: Services, owner: Server, content: bytes) -> None:
    """A query made from an answer of another (``.../answers/{n}/query-studies``) is kept by the same
    process: its follow-up requests go there without a lookup."""
    try:
        made = orjson.loads(content)
    except orjson.JSONDecodeError:
        return
    if isinstance(made, dict) and isinstance(made.get("Path"), str):
        found = _QUERY_PATH.fullmatch(made["Path"])
        if found is not None:
            services.query_owners.remember(found.group(1), owner)

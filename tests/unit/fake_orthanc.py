"""Just enough of Orthanc's REST API, played by an httpx mock transport, for unit tests of the service."""

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx

from orthanc_jobs.core.model import Server
from orthanc_jobs.core.registry import Registry
from orthanc_jobs.core.store import SqliteStore

GOOD = "Basic " + base64.b64encode(b"demo:demo").decode()
TOKEN = "Bearer token"


class Chunks(httpx.AsyncByteStream):
    """A body that arrives in pieces, as from a socket (a bytes body would count as read already)."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


def _streamed(status: int, content: Any) -> httpx.Response:
    """A JSON answer that arrives as from a socket (the service streams what it forwards)."""
    body = json.dumps(content).encode()
    return httpx.Response(status, stream=Chunks(body), headers={"Content-Type": "application/json"})


class FakeOrthanc:
    """Just enough of Orthanc's REST API, per server URL, recording what it is asked."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, dict[str, Any]]] = {}
        self.requests: list[httpx.Request] = []
        self.down: set[str] = set()
        #: Jobs Orthanc cannot write as JSON (NaN progress): 400 for them, and for a listing with them.
        self.unwritable: set[str] = set()
        #: The Authorization headers each server accepts (its RegisteredUsers).
        self.credentials: dict[str, set[str]] = {}
        #: Query handles each server keeps (POST /modalities/{name}/query), with their answers.
        self.queries: dict[str, dict[str, list[dict[str, str]]]] = {}
        #: Modalities each server knows (in its memory, as Orthanc keeps them).
        self.modalities: dict[str, dict[str, Any]] = {}
        #: Servers of a version without DELETE on jobs (before 1.12.1): 405, as Orthanc 1.10 answers.
        self.no_delete: set[str] = set()

    def add_server(self, url: str) -> None:
        self.jobs[url] = {}
        self.queries[url] = {}
        self.modalities[url] = {}
        self.credentials[url] = {GOOD, TOKEN}

    def add_job(self, url: str, state: str = "Pending", created: str = "20261128T100000.000000") -> str:
        job_id = str(uuid.uuid4())
        self.jobs[url][job_id] = {
            "ID": job_id,
            "Type": "Archive",
            "State": state,
            "Progress": 0,
            "CreationTime": created,
            "Timestamp": created,
            "ErrorCode": 0,
        }
        return job_id

    def add_query(self, url: str, answers: int = 2) -> str:
        query_id = str(uuid.uuid4())
        self.queries[url][query_id] = [{"0020,000d": f"1.2.3.{n}"} for n in range(answers)]
        return query_id

    def _query(self, request: httpx.Request, url: str, parts: list[str]) -> httpx.Response:
        """/queries/{id}/...: a query handle, as Orthanc keeps it in the process that ran it."""
        answers = self.queries[url].get(parts[0])
        if answers is None:
            return _streamed(404, {"HttpStatus": 404, "Message": "Unknown resource"})
        method, tail = request.method, parts[1:]
        if method == "GET" and not tail:
            return _streamed(200, ["answers", "level", "modality", "query", "retrieve"])
        if method == "DELETE" and not tail:
            del self.queries[url][parts[0]]
            return _streamed(200, {})
        if method == "GET" and tail == ["answers"]:
            expanded = "expand" in request.url.params
            return _streamed(200, answers if expanded else [str(n) for n in range(len(answers))])
        if method == "POST" and tail == ["retrieve"]:
            job_id = self.add_job(url)
            return _streamed(200, {"ID": job_id, "Path": f"/jobs/{job_id}"})
        if method == "POST" and len(tail) == 3 and tail[0] == "answers" and tail[2] == "query-studies":
            made = self.add_query(url, 1)
            return _streamed(200, {"ID": made, "Path": f"/queries/{made}"})
        return _streamed(404, {"HttpStatus": 404, "Message": "Unknown resource"})

    def _modality(self, request: httpx.Request, url: str, parts: list[str]) -> httpx.Response:
        known = self.modalities[url]
        if not parts:
            return _streamed(200, list(known))
        name, tail = parts[0], parts[1:]
        if request.method == "PUT" and not tail:
            known[name] = json.loads(request.content)
            return _streamed(200, {})
        if name not in known:
            return _streamed(404, {"HttpStatus": 404, "Message": "Unknown resource"})
        if request.method == "DELETE" and not tail:
            del known[name]
            return _streamed(200, {})
        if request.method == "POST" and tail == ["store-straight"]:
            return _streamed(200, {"Bytes": len(request.content)})
        if request.method == "POST" and tail == ["query"]:
            made = self.add_query(url)
            return _streamed(200, {"ID": made, "Path": f"/queries/{made}"})
        return _streamed(200, known[name])

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        url = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        if url in self.down:
            raise httpx.ConnectError("refused", request=request)
        jobs = self.jobs[url]
        path = request.url.path
        auth = request.headers.get("authorization", "")
        if auth not in self.credentials[url]:
            return httpx.Response(401)
        if path == "/modalities" or path.startswith("/modalities/"):
            return self._modality(request, url, path.split("/")[2:])
        if path == "/queries":
            return httpx.Response(200, json=list(self.queries[url]))
        if path.startswith("/queries/"):
            return self._query(request, url, path.split("/")[2:])
        if path == "/system":
            return httpx.Response(200, json={"Version": "1.10.1"})
        if path == "/jobs" and "expand" not in request.url.params:
            return httpx.Response(200, json=list(jobs))
        if path == "/jobs":
            if self.unwritable & set(jobs):
                return httpx.Response(
                    400, json={"Details": "Presumably an error while parsing the JSON body"}
                )
            return httpx.Response(200, json=list(jobs.values()))
        parts = path.split("/")[2:]
        job = jobs.get(parts[0])
        if job is None:
            return httpx.Response(404 if request.method == "GET" else 400)
        if len(parts) == 1 and request.method == "GET" and parts[0] in self.unwritable:
            return httpx.Response(
                400, json={"HttpStatus": 400, "Details": "Presumably an error while parsing"}
            )
        if len(parts) == 2 and request.method == "POST" and parts[1] == "cancel":
            job.update(State="Failure", ErrorCode=37, Timestamp="20261128T110000.000000")
            return httpx.Response(200, json={})
        if request.method == "DELETE" and url in self.no_delete:
            return httpx.Response(405, headers={"Allow": "GET"})
        if len(parts) == 1 and request.method == "DELETE":
            del jobs[parts[0]]
            return httpx.Response(200)  # Orthanc 1.12's answer: an empty body
        if len(parts) == 1:
            return httpx.Response(200, json=job)
        if request.method == "POST" and parts[1] == "pause":
            job.update(State="Paused", Timestamp="20261128T110000.000000")
            return httpx.Response(200, json={})
        if request.method == "POST" and parts[1] == "resubmit":
            if job["State"] != "Failure":
                return httpx.Response(400, json={"HttpStatus": 400, "Message": "Bad sequence of calls"})
            job.update(State="Pending", ErrorCode=0, Timestamp="20261128T120000.000000")
            return httpx.Response(200, json={})
        if request.method == "POST" and parts[1] == "resume":
            return httpx.Response(400)  # as Orthanc: empty body
        if request.method == "GET" and parts[1] == "archive":
            headers = {"Content-Type": "application/zip", "Content-Disposition": "filename=a.zip"}
            return httpx.Response(200, stream=Chunks(b"PK", b"x" * 50_000, b"x" * 50_000), headers=headers)
        return httpx.Response(404, json={"HttpStatus": 404, "Message": "Job has no such output"})


def registry_of(urls: list[str]) -> Registry:
    """A registry in memory with one live server per URL (orthanc-1, orthanc-2...), with TOKEN."""
    registry = Registry(SqliteStore(":memory:"), not_responding_after=10, stopped_after=60)
    for n, url in enumerate(urls, start=1):
        registry.register_server(name=f"orthanc-{n}", url=url, incarnation=f"inc-{n}", token=TOKEN)
    return registry


def a_server(url: str = "http://127.0.0.1:8001") -> Server:
    """A registered server, as the store and the client see one (orthanc-1, incarnation inc-1)."""
    return Server(
        url=url, name="orthanc-1", incarnation="inc-1", token="Bearer t", registered_at=1.0, last_seen=2.0
    )


class ConcurrencyCounter:
    """A transport for ``fake``'s answers, each after a millisecond, counting the requests under way at
    once: ``most`` since created (or since reset to 0)."""

    def __init__(self, fake: FakeOrthanc) -> None:
        self.fake = fake
        self.under_way = 0
        self.most = 0
        self.transport = httpx.MockTransport(self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        self.under_way += 1
        self.most = max(self.most, self.under_way)
        await asyncio.sleep(0.001)
        self.under_way -= 1
        return self.fake.handler(request)

"""Bounds on a request: its body's deadline, and public requests in progress (the plugins' not counted)."""

import asyncio
from typing import Any

import pytest

from orthanc_jobs.api.limits import RequestLimits


async def _call(app: RequestLimits, path: str, body_chunks: list[bytes], delay: float = 0) -> dict[str, Any]:
    chunks = list(body_chunks)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(delay)
        body = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": body, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b""}
    await app(scope, receive, send)
    return {"status": sent[0]["status"], "body": b"".join(m.get("body", b"") for m in sent[1:])}


async def _read_body(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_a_body_that_does_not_arrive_in_time_is_refused() -> None:
    from orthanc_jobs.core.errors import RequestTimeout

    app = RequestLimits(_read_body, max_bytes=1000, body_timeout=0.05, max_requests_in_progress=10)
    assert (await _call(app, "/jobs", [b"a", b"b"]))["status"] == 200
    with pytest.raises(RequestTimeout):  # the application's error handler makes it a 408
        await _call(app, "/jobs", [b"a", b"b", b"c"], delay=0.03)


async def test_public_requests_in_progress_are_bounded_but_not_the_plugins() -> None:
    release = asyncio.Event()

    async def held(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await release.wait()
        await _read_body(scope, receive, send)

    app = RequestLimits(held, max_bytes=1000, body_timeout=5, max_requests_in_progress=2)
    holding = [asyncio.ensure_future(_call(app, "/jobs", [b""])) for _ in range(2)]
    await asyncio.sleep(0.01)

    refused = await _call(app, "/jobs", [b""])
    assert refused["status"] == 503 and b'"HttpStatus":503' in refused["body"]
    plugin = asyncio.ensure_future(_call(app, "/orthanc-jobs/internal/events", [b""]))
    health = asyncio.ensure_future(_call(app, "/healthz", [b""]))
    release.set()
    assert [r["status"] for r in await asyncio.gather(*holding, plugin, health)] == [200] * 4
    assert app.in_progress == 0

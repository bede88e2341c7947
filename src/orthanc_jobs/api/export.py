"""``GET /orthanc-jobs/export``: the jobs of a listing (the same filters and paging as ``GET /jobs``), as a
file to download: CSV for spreadsheets and scripts, or JSON (the expanded listing). Written and sent in
chunks, so that a large export is never one huge answer in memory."""

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse

from orthanc_jobs import SERVICE_PREFIX
from orthanc_jobs.api.context import Authorized
from orthanc_jobs.api.filters import ListingQuery, PageLimit, PageOffset, page_of
from orthanc_jobs.core.errors import BadRequest
from orthanc_jobs.core.wire import expanded_jobs_chunks, jobs_csv

router = APIRouter(prefix=SERVICE_PREFIX, tags=["Job-service"])

_MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json"}


async def _on_the_loop(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Each chunk written on the event loop, where the registry lives (no other thread may read it), the
    loop free for other requests between two chunks."""
    for chunk in chunks:
        yield chunk
        await asyncio.sleep(0)


@router.get("/export", summary="The jobs of a listing (its filters and paging) as a CSV or JSON file")
async def export_jobs(
    services: Authorized,
    query: ListingQuery,
    output: Annotated[str, Query(alias="format", description="csv (the default) or json")] = "csv",
    limit: PageLimit = None,
    offset: PageOffset = 0,
) -> Response:
    media_type = _MEDIA_TYPES.get(output.lower())
    if media_type is None:
        raise BadRequest(f"format: {output!r} is not one of {', '.join(_MEDIA_TYPES)}")
    registry = services.registry
    total, page = await page_of(registry, query, offset, limit)
    chunks = jobs_csv(registry, page) if output.lower() == "csv" else expanded_jobs_chunks(registry, page)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    headers = {
        "X-Total-Count": str(total),
        "Content-Disposition": f"attachment; filename=orthanc-jobs-{stamp}.{output.lower()}",
    }
    return StreamingResponse(_on_the_loop(chunks), media_type=media_type, headers=headers)

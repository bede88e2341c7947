"""The one reading of a job filter, whoever asks: the listing's and the export's query parameters
(``GET /jobs?status=Failure&created-since=...``), a bulk action's JSON (``{"Filter": {...}}``).

Each filter is named as the listing's query parameter; each takes a list of values (a parameter repeated,
or a JSON list), those of several values also comma-separated. Anything it cannot read is a 400 that says
which filter and why.
"""

import asyncio
from collections.abc import Mapping
from typing import Annotated

from fastapi import Depends, Query

from orthanc_jobs.api.context import Authorized
from orthanc_jobs.core.errors import BadRequest
from orthanc_jobs.core.filters import JobQuery, ResourceSearch, TextSearch, TimeRange, is_resource_id
from orthanc_jobs.core.model import Job, JobState, is_job_id
from orthanc_jobs.core.registry import Registry

__all__ = [
    "FILTER_NAMES",
    "ListingQuery",
    "PageLimit",
    "PageOffset",
    "job_query_from_json",
    "page_of",
    "parse_job_query",
]

#: Every filter, by the name of its query parameter.
FILTER_NAMES = (
    "status",
    "type",
    "server",
    "ids",
    "created-since",
    "created-until",
    "completed-since",
    "completed-until",
    "q",
    "resource",
)
_STATE_NAMES = {state.lower(): state for state in JobState}


def _split_values(values: list[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _parse_states(values: list[str]) -> frozenset[str] | None:
    names = _split_values(values)
    if not names:
        return None
    states = set()
    for value in names:
        state = _STATE_NAMES.get(value.lower())
        if state is None:
            raise BadRequest(f"unknown job state {value!r}; expected one of {', '.join(JobState)}")
        states.add(str(state))
    return frozenset(states)


def _server_urls(registry: Registry, values: list[str]) -> frozenset[str] | None:
    wanted = set(_split_values(values))
    if not wanted:
        return None
    return frozenset(s.url for s in registry.servers() if s.name in wanted or s.url in wanted)


def _parse_ids(values: list[str]) -> frozenset[str] | None:
    ids = _split_values(values)
    if not ids:
        return None
    for value in ids:
        if not is_job_id(value):
            raise BadRequest(f"ids: {value!r} is not a job id")
    return frozenset(value.lower() for value in ids)


def _one_value(params: Mapping[str, list[str]], name: str) -> str | None:
    """The value of a filter that takes one (empty: none), or a 400 if it has several."""
    values = [value.strip() for value in params.get(name, []) if value.strip()]
    if len(values) > 1:
        raise BadRequest(f"{name}: one value, not {len(values)}")
    return values[0] if values else None


def _time_range(params: Mapping[str, list[str]], prefix: str) -> TimeRange | None:
    since, until = _one_value(params, f"{prefix}-since"), _one_value(params, f"{prefix}-until")
    if since is None and until is None:
        return None
    try:
        return TimeRange.between(since, until)
    except ValueError as error:
        raise BadRequest(f"{prefix}-since/{prefix}-until: {error}") from None


def _resource(value: str | None) -> ResourceSearch | None:
    if value is None:
        return None
    if not is_resource_id(value):
        raise BadRequest(
            f"resource: {value!r} is not an Orthanc resource id (a patient, study, series or instance, "
            "e.g. b9c08539-26f93bde-c81ab0d7-bffaf2cb-a4d0bdd0)"
        )
    return ResourceSearch(value)


def parse_job_query(registry: Registry, params: Mapping[str, list[str]]) -> JobQuery:
    """The query of the filters in ``params`` (by the listing's parameter names; others are not read)."""
    text = _one_value(params, "q")
    return JobQuery(
        states=_parse_states(params.get("status", [])),
        types=frozenset(value.lower() for value in _split_values(params.get("type", []))) or None,
        server_urls=_server_urls(registry, params.get("server", [])),
        ids=_parse_ids(params.get("ids", [])),
        created=_time_range(params, "created"),
        completed=_time_range(params, "completed"),
        text=TextSearch(text) if text is not None else None,
        resource=_resource(_one_value(params, "resource")),
    )


def job_query_from_json(registry: Registry, obj: object) -> JobQuery:
    """The query of a JSON filter: an object of the listing's parameter names, each a string or a list of
    strings (``{"status": ["Failure"], "type": "DicomModalityStore", "created-since": "2025-01-01"}``)."""
    if not isinstance(obj, dict):
        raise BadRequest('a filter is a JSON object, e.g. {"status": ["Failure"]}')
    unknown = sorted(str(name) for name in obj if name not in FILTER_NAMES)
    if unknown:
        raise BadRequest(f"unknown filter {', '.join(unknown)}; filters are {', '.join(FILTER_NAMES)}")
    params: dict[str, list[str]] = {}
    for name, value in obj.items():
        if isinstance(value, str):
            params[name] = [value]
        elif isinstance(value, list) and all(isinstance(each, str) for each in value):
            params[name] = value
        else:
            raise BadRequest(f"filter {name}: a string or a list of strings, not {type(value).__name__}")
    return parse_job_query(registry, params)


def _listing_query(
    services: Authorized,
    status: Annotated[list[str], Query(description="Orthanc state names, repeated or comma-separated")] = [],  # noqa: B006
    type: Annotated[list[str], Query(description="Job types, e.g. Archive, ResourceModification")] = [],  # noqa: B006
    server: Annotated[list[str], Query(description="Owner servers, by Name or URL")] = [],  # noqa: B006
    ids: Annotated[list[str], Query(description="Job ids, repeated or comma-separated")] = [],  # noqa: B006
    created_since: Annotated[
        list[str],
        Query(
            alias="created-since",
            description="Created at or after: 20250101T120000 (UTC), 2025-01-01T12:00:00Z, 2025-01-01",
        ),
    ] = [],  # noqa: B006
    created_until: Annotated[
        list[str], Query(alias="created-until", description="Created at or before (a date: the whole day)")
    ] = [],  # noqa: B006
    completed_since: Annotated[
        list[str], Query(alias="completed-since", description="Finished at or after (as created-since)")
    ] = [],  # noqa: B006
    completed_until: Annotated[
        list[str], Query(alias="completed-until", description="Finished at or before (as created-until)")
    ] = [],  # noqa: B006
    q: Annotated[
        list[str],
        Query(description="Text in the ID, Type, Content (Description...), ErrorDescription or ErrorDetails"),
    ] = [],  # noqa: B006
    resource: Annotated[
        list[str], Query(description="An Orthanc patient, study, series or instance id named in the Content")
    ] = [],  # noqa: B006
) -> JobQuery:
    given = [status, type, server, ids, created_since, created_until, completed_since, completed_until]
    return parse_job_query(services.registry, dict(zip(FILTER_NAMES, [*given, q, resource], strict=True)))


#: A route's query parameters as a JobQuery (the caller's credentials checked first).
ListingQuery = Annotated[JobQuery, Depends(_listing_query)]
#: The listing's paging: at most this many jobs (none: all)...
PageLimit = Annotated[int | None, Query(ge=0, le=1_000_000)]
#: ... from this one on, in creation order.
PageOffset = Annotated[int, Query(ge=0, le=1_000_000_000)]


async def page_of(
    registry: Registry, query: JobQuery, offset: int, limit: int | None
) -> tuple[int, list[Job]]:
    """``Registry.page_jobs``, the event loop answering other requests at each pause of a long search."""
    for step in registry.page_steps(query, offset=offset, limit=limit):
        if step is not None:
            return step
        await asyncio.sleep(0)
    raise AssertionError("the last step of page_steps is the page")

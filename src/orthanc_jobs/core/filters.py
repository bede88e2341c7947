"""Which jobs a listing, an export or a bulk action is about: a :class:`JobQuery`, and how a job matches it.

The registry reads its sorted indexes for the state, type, server, ids and creation time of a query
(core/registry.py); the other criteria are judged job by job with :meth:`JobQuery.matches`, mostly on the
job's serialised JSON (``Job.json_head``) without parsing it: a finished job is kept serialised, and the
history is most of the registry (up to a million jobs).
"""

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

import orjson

from orthanc_jobs.core.model import Job

__all__ = [
    "EVERY_JOB",
    "JobQuery",
    "ResourceSearch",
    "TextSearch",
    "TimeRange",
    "completion_time",
    "is_resource_id",
    "parse_time",
]

#: Before every time Orthanc writes (its times start with a digit), after a missing one (""): a job without
#: the time is in no range.
EARLIEST = "0"

# A time as a person or a script writes it: ISO 8601 (extended or basic, as Orthanc's own), a date alone, a
# time to the hour, minute, second or fraction of a second, in UTC unless a zone says otherwise.
_TIME = re.compile(
    r"(?P<year>\d{4})-?(?P<month>\d{2})-?(?P<day>\d{2})"
    r"(?:[T ](?P<hour>\d{2})(?::?(?P<minute>\d{2})(?::?(?P<second>\d{2})(?:[.,](?P<fraction>\d{1,6}))?)?)?"
    r"(?P<zone>Z|[+-]\d{2}(?::?\d{2})?)?)?",
    re.IGNORECASE,
)
_RESOURCE_ID = re.compile(r"[0-9a-f]{8}(?:-[0-9a-f]{8}){4}", re.IGNORECASE)
_COMPLETION_TIME = b'"CompletionTime":"'
_FIRST_COMPLETION_TIME = b"{" + _COMPLETION_TIME


def parse_time(value: str) -> tuple[datetime, timedelta]:
    """A time as written (``20250101T120000.5``, ``2025-01-01T12:00:00Z``, ``2025-01-01``...), in UTC, and
    the span its precision covers (a day for a date, a second for a time to the second...). Raises
    ValueError for anything else."""
    found = _TIME.fullmatch(value.strip())
    if found is None:
        raise ValueError(
            f"{value!r} is not a time: write 20250101T120000 (Orthanc's format, UTC), "
            "2025-01-01T12:00:00Z (ISO 8601) or 2025-01-01"
        )
    parts = found.groupdict()
    fraction = parts["fraction"] or ""
    zone = _zone(parts["zone"] or "Z")
    if zone is None:
        raise ValueError(f"{value!r} has no such zone: write Z, or an offset from -23:59 to +23:59")
    try:
        moment = datetime(
            int(parts["year"]),
            int(parts["month"]),
            int(parts["day"]),
            int(parts["hour"] or 0),
            int(parts["minute"] or 0),
            int(parts["second"] or 0),
            int(fraction.ljust(6, "0")),
            tzinfo=zone,
        )
    except ValueError:
        raise ValueError(f"{value!r} is no such day or time") from None
    if fraction:
        span = timedelta(microseconds=10 ** (6 - len(fraction)))
    elif parts["second"]:
        span = timedelta(seconds=1)
    elif parts["minute"]:
        span = timedelta(minutes=1)
    elif parts["hour"]:
        span = timedelta(hours=1)
    else:
        span = timedelta(days=1)
    try:
        return moment.astimezone(UTC), span
    except OverflowError:  # in UTC, before year 1 or after 9999: the calendar's end on that side
        return (datetime.min if moment.year == 1 else datetime.max).replace(tzinfo=UTC), span


def _zone(text: str) -> timezone | None:
    """The zone written (``Z``, ``+01:00``, ``-0230``, ``+01``); None if it is not one."""
    if text.upper() == "Z":
        return UTC
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 23 or minutes > 59:
        return None
    offset = timedelta(hours=hours, minutes=minutes)
    return timezone(-offset if text[0] == "-" else offset)


def _orthanc_bound(moment: datetime) -> str:
    """A bound in Orthanc's format, its fraction written only when not zero: compared as strings, it then
    sorts right against times written with a fraction and without (``20250101T120000``)."""
    text = f"{moment.year:04d}{moment:%m%dT%H%M%S}"  # %Y does not write a year before 1000 on 4 digits
    return f"{text}.{moment.microsecond:06d}" if moment.microsecond else text


@dataclass(frozen=True, slots=True)
class TimeRange:
    """Times from ``start`` (included) to ``end`` (excluded; None: no end), in Orthanc's format, compared as
    strings (Orthanc's times are UTC, digits in fixed places)."""

    start: str = EARLIEST
    end: str | None = None

    @classmethod
    def between(cls, since: str | None, until: str | None) -> "TimeRange":
        """From ``since`` to ``until``, both included: ``until`` with all the span it is written to
        (``2025-01-31``: the whole day; to the end of 9999: no end). Times beyond the calendar (year 1 to
        9999, in UTC) are its ends. Raises ValueError for a time that is not one, or an empty range."""
        start = _orthanc_bound(parse_time(since)[0]) if since else EARLIEST
        end = None
        if until:
            moment, span = parse_time(until)
            if moment <= datetime.max.replace(tzinfo=UTC) - span:
                end = _orthanc_bound(moment + span)
        if end is not None and end <= start:
            raise ValueError(f"{since!r} is after {until!r}")
        return cls(start, end)

    def __contains__(self, time: str) -> bool:
        return self.start <= time and (self.end is None or time < self.end)


def completion_time(job: Job) -> str:
    """The job's ``CompletionTime`` ("" while it runs), read from its serialised JSON where that is sure:
    the first field, as Orthanc writes it (its keys sorted), or the only key of that name."""
    if job.parsed is not None:
        return str(job.parsed.get("CompletionTime") or "")
    head = job.json_head
    if head.startswith(_FIRST_COMPLETION_TIME):
        start = len(_FIRST_COMPLETION_TIME)
    else:
        at = head.find(_COMPLETION_TIME)
        if at < 0:
            return ""
        if head.find(_COMPLETION_TIME, at + 1) >= 0:  # one more within the Content
            return str(job.content.get("CompletionTime") or "")
        start = at + len(_COMPLETION_TIME)
    return head[start : head.find(b'"', start)].decode()


@dataclass(frozen=True, slots=True)
class TextSearch:
    """Jobs whose ID, Type, ErrorDescription, ErrorDetails or serialised Content hold ``text``, in any case.

    Judged first on the whole serialised job, without parsing it: a job that does not hold the text there
    does not hold it anywhere; one that does (maybe in another field: a time, a key) is parsed to be sure.
    """

    text: str
    _lower: str = field(init=False, repr=False, compare=False)
    #: The text as it appears in the serialised job: as it is (within the Content) and escaped as a string.
    _forms: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lower = self.text.lower()
        object.__setattr__(self, "_lower", lower)
        object.__setattr__(self, "_forms", tuple(dict.fromkeys((lower, orjson.dumps(lower).decode()[1:-1]))))

    def found_in(self, job: Job) -> bool:
        # Decoded, then in lower case: faster than bytes.lower() (CPython's str has a fast path for ASCII).
        serialised = job.json_head.decode().lower()
        if not any(form in serialised for form in self._forms):
            return False
        lower = self._lower
        if lower in job.id.lower() or lower in job.type.lower():
            return True
        content = job.content
        fields = (content.get("ID"), content.get("ErrorDescription"), content.get("ErrorDetails"))
        if any(isinstance(value, str) and lower in value.lower() for value in fields):
            return True
        # As it is (a piece of the JSON: `"RemoteAet":"PACS2"`) or escaped as the JSON writes a string
        # (`Ward "7" C:\PACS` is `Ward \"7\" C:\\PACS` there).
        content_json = orjson.dumps(content.get("Content")).decode().lower()
        return any(form in content_json for form in self._forms)


def is_resource_id(value: str) -> bool:
    """An Orthanc patient, study, series or instance id (``b9c08539-26f93bde-c81ab0d7-bffaf2cb-a4d0bdd0``)."""
    return _RESOURCE_ID.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class ResourceSearch:
    """Jobs whose Content names the Orthanc resource ``resource`` (in any case), as a whole token."""

    resource: str
    _lower: str = field(init=False, repr=False, compare=False)
    _pattern: "re.Pattern[bytes]" = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not is_resource_id(self.resource):
            raise ValueError(f"{self.resource!r} is not an Orthanc resource id")
        object.__setattr__(self, "_lower", self.resource.lower())
        token = rb"(?<![0-9A-Za-z-])" + re.escape(self.resource.encode()) + rb"(?![0-9A-Za-z-])"
        object.__setattr__(self, "_pattern", re.compile(token, re.IGNORECASE))

    def named_by(self, job: Job) -> bool:
        # Anywhere in the serialised job first (a plain search); then as a token, in its Content only.
        if self._lower not in job.json_head.decode().lower():
            return False
        return self._pattern.search(orjson.dumps(job.content.get("Content"))) is not None


@dataclass(frozen=True, slots=True)
class JobQuery:
    """What a job must be to match: each criterion None matches every job; sets are of accepted values.

    ``types`` are in lower case (types match in any case); ``server_urls`` are the owners' normalised URLs.
    """

    states: frozenset[str] | None = None
    types: frozenset[str] | None = None
    server_urls: frozenset[str] | None = None
    ids: frozenset[str] | None = None
    created: TimeRange | None = None
    completed: TimeRange | None = None
    text: TextSearch | None = None
    resource: ResourceSearch | None = None

    def matches(self, job: Job) -> bool:
        # The cheapest criteria first: those read from the job's fields, then from its JSON.
        return (
            (self.states is None or job.state in self.states)
            and (self.types is None or job.type.lower() in self.types)
            and (self.server_urls is None or job.server_url in self.server_urls)
            and (self.ids is None or job.id in self.ids)
            and (self.created is None or job.order_key[0] in self.created)
            and (self.completed is None or completion_time(job) in self.completed)
            and (self.resource is None or self.resource.named_by(job))
            and (self.text is None or self.text.found_in(job))
        )


#: The query every job matches.
EVERY_JOB = JobQuery()

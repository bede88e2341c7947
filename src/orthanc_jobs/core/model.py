"""Plain typed data: Orthanc job states, servers and jobs as the registry keeps them."""

import hashlib
import hmac
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import orjson


class JobState(StrEnum):
    """Orthanc's job states, spelt as Orthanc writes them."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCESS = "Success"
    FAILURE = "Failure"
    PAUSED = "Paused"
    RETRY = "Retry"


TERMINAL_STATES = frozenset({JobState.SUCCESS, JobState.FAILURE})


#: How Orthanc writes a time in its jobs' JSON (UTC), e.g. ``20250101T120000.000000``.
ORTHANC_TIME_FORMAT = "%Y%m%dT%H%M%S.%f"
_ORTHANC_TIME = re.compile(r"\d{8}T\d{6}(?:\.\d{1,6})?")


def orthanc_timestamp(epoch: float) -> str:
    """A time as Orthanc writes it in job JSON: UTC ``YYYYMMDDTHHMMSS.ffffff``."""
    return datetime.fromtimestamp(epoch, UTC).strftime(ORTHANC_TIME_FORMAT)


def parse_orthanc_time(value: str) -> datetime | None:
    """A time as Orthanc writes it (with or without the fraction of a second), or None if it is not one:
    digits in their places only (strptime alone would read ``20240131T1545`` as 15:04:05)."""
    if not _ORTHANC_TIME.fullmatch(value):
        return None
    layout = ORTHANC_TIME_FORMAT if "." in value else ORTHANC_TIME_FORMAT.removesuffix(".%f")
    try:
        return datetime.strptime(value, layout).replace(tzinfo=UTC)
    except ValueError:  # digits in their places, but no such day or hour
        return None


class ServerStatus(StrEnum):
    ALIVE = "alive"
    NOT_RESPONDING = "not-responding"
    STOPPED = "stopped"


class JobAction(StrEnum):
    CANCEL = "cancel"
    PAUSE = "pause"
    RESUME = "resume"
    RESUBMIT = "resubmit"


#: Which action Orthanc accepts in which state (it answers the others 400); the dashboard's rules agree.
ACTION_STATES: dict[JobAction, frozenset[str]] = {
    JobAction.PAUSE: frozenset({JobState.PENDING, JobState.RUNNING, JobState.RETRY}),
    JobAction.RESUME: frozenset({JobState.PAUSED}),
    JobAction.CANCEL: frozenset({JobState.PENDING, JobState.RUNNING, JobState.PAUSED, JobState.RETRY}),
    JobAction.RESUBMIT: frozenset({JobState.FAILURE}),
}


# Orthanc's job ids are UUIDs; output keys are plain words such as "archive".
_JOB_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_OUTPUT_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


def normalize_server_url(url: str) -> str:
    """A server's URL as the job-service knows it: ``scheme://host:port[/path]``, in lower case but for the
    path, the port always written, no trailing slash. Raises ValueError for anything else than http(s), a
    user name or password (``http://orthanc-1:8042@attacker``), a bad port (``:80429``, ``:8042.evil``), a
    query or a fragment: look-alikes must not pass for a declared server."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url!r}: only http and https")
    if "@" in parts.netloc:
        raise ValueError(f"{url!r}: no user name or password in a server's URL")
    if parts.query or parts.fragment or not parts.hostname:
        raise ValueError(f"{url!r}: scheme://host:port/path, nothing more")
    port = parts.port or (443 if parts.scheme == "https" else 80)  # parts.port raises for a bad port
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}{parts.path.rstrip('/')}"


def plugin_secret_for(secret: str, server_url: str) -> str:
    """The secret of one server's plugin: HMAC-SHA256 of its normalised URL under the job-service's secret,
    in hex (``printf %s URL | openssl dgst -sha256 -hmac SECRET`` gives the same). A plugin's secret lets
    it speak for its own URL only: one leaked from a server cannot register, or speak for, another."""
    return hmac.new(secret.encode(), normalize_server_url(server_url).encode(), hashlib.sha256).hexdigest()


def is_job_id(value: str) -> bool:
    return _JOB_ID.fullmatch(value) is not None


def is_output_key(value: str) -> bool:
    return _OUTPUT_KEY.fullmatch(value) is not None


@dataclass(slots=True)
class Server:
    """One Orthanc process, as its reporter registered it.

    A server is identified by ``url`` (where the job-service reaches it); ``incarnation`` changes at every
    start of the process, and ``token`` is valid only for that incarnation.
    """

    url: str
    name: str
    incarnation: str
    token: str
    registered_at: float
    last_seen: float
    stopped: bool = False
    orthanc_version: str = ""
    #: When its jobs were last read in full (None: not yet since it registered).
    last_resync: float | None = None
    #: How many jobs it listed when last asked for all of them (None: not asked yet); not stored.
    listed_jobs: int | None = None
    #: Decided by the registry (heartbeats, polls, silence); not stored.
    status: ServerStatus = ServerStatus.ALIVE
    #: The status last announced (logs, event stream), to report each change once.
    reported_status: ServerStatus | None = None
    #: What its plugin let go while the job-service was unreachable (from its heartbeats; None: nothing).
    gap: dict[str, Any] | None = None


@dataclass(slots=True)
class Job:
    """A job as its owner last described it, with the owner's identity.

    A finished job, which no longer changes, is kept as its serialised JSON only (about a quarter of the
    memory of the parsed JSON: the history is most of the registry); ``content`` parses it when asked.
    """

    id: str
    server_url: str
    incarnation: str
    #: The JSON serialised without its closing brace, so the owner can be appended cheaply.
    json_head: bytes
    state: str
    type: str
    #: Sort key: Orthanc's CreationTime, then the id.
    order_key: tuple[str, str]
    timestamp: str
    #: When the job-service first heard of the job (its own clock).
    first_seen: float
    #: When the job-service saw it finished (its own clock), for the history's retention.
    finished_at: float | None = None
    #: The owner no longer holds the job (Orthanc forgot it, or the process is gone): history only.
    history_only: bool = False
    #: The state is the job-service's presumption (its process is gone or silent, or it no longer knows
    #: the job), not its owner's word: any later word of the owner's replaces it.
    presumed: bool = False
    #: The parsed JSON of an unfinished job (None: parsed from ``json_head`` when asked).
    parsed: dict[str, Any] | None = None
    #: When its state or progress last changed, on the job-service's clock (None: not seen change since
    #: this process started): a running job still for long is stuck.
    progress_since: float | None = None
    #: It ran at least once (Running, or ended in Success): a resubmitted or resumed job starts again, but
    #: it waited for its first slot only once.
    started: bool = False
    #: Seconds from its creation to its first start, on its owner's clock (None: not seen starting).
    waited: float | None = None

    @property
    def content(self) -> dict[str, Any]:
        """The job's JSON as its owner wrote it (a finished job's is parsed anew: do not modify it)."""
        if self.parsed is not None:
            return self.parsed
        parsed: dict[str, Any] = orjson.loads(self.json_head + b"}")
        return parsed

    @classmethod
    def from_content(
        cls,
        content: dict[str, Any],
        *,
        server_url: str,
        incarnation: str,
        first_seen: float,
        finished_at: float | None = None,
        history_only: bool = False,
        presumed: bool = False,
        serialised: bytes | None = None,
        progress_since: float | None = None,
    ) -> "Job":
        """``serialised``: ``content`` as orjson writes it, when the caller has it already (the store)."""
        job_id = str(content["ID"])
        state = sys.intern(str(content["State"]))
        return cls(
            id=job_id,
            server_url=sys.intern(server_url),
            incarnation=sys.intern(incarnation),
            json_head=(serialised or orjson.dumps(content))[:-1],
            state=state,
            type=sys.intern(str(content.get("Type", ""))),
            order_key=(str(content.get("CreationTime", "")), job_id),
            timestamp=str(content.get("Timestamp", "")),
            first_seen=first_seen,
            finished_at=finished_at,
            history_only=history_only,
            presumed=presumed,
            parsed=None if state in TERMINAL_STATES else content,
            progress_since=progress_since,
        )

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def ended_after(self, previous: "Job | None") -> bool:
        """This state of the job is an end that ``previous`` (its state before, None: not known) was not:
        a first end, or a new one after a resubmit (Orthanc's CompletionTime moved, even if the failure
        came again before anything else was seen). The owner confirming an end presumed here is no new one.
        """
        if not self.is_terminal:
            return False
        if previous is None or not previous.is_terminal:
            return True
        if previous.presumed:
            return False
        return bool(previous.content.get("CompletionTime") != self.content.get("CompletionTime"))

    def started_after(self, previous: "Job | None") -> bool:
        """The job started for the first time with this state (ran, or ended in Success)."""
        return self.started and not (previous is not None and previous.started)

    @property
    def running_time(self) -> float | None:
        """A finished job's running time, Orthanc's EffectiveRuntime; None if it never ran (failed without
        running time: cancelled while pending) or its end was presumed here. A job ended in Success ran,
        even in less time than EffectiveRuntime shows."""
        runtime = self.content.get("EffectiveRuntime") if self.is_terminal and not self.presumed else None
        if not isinstance(runtime, int | float) or (runtime <= 0 and self.state != JobState.SUCCESS):
            return None
        return float(runtime)

    @property
    def progress(self) -> Any:
        """Orthanc's Progress of an unfinished job (None for a finished one: it no longer moves)."""
        return self.parsed.get("Progress") if self.parsed is not None else None

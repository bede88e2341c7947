"""Alerts by webhook: a signed JSON ``POST`` to the operator's receivers when a job fails, a job is stuck, or
a server stops answering or stops.

The registry tells every change to its subscribers (core/changes.py); ``Webhooks.notice`` picks the alerts
among them, writes each matching webhook's body once (the same bytes, signature and ``Delivery`` id for
every attempt) and puts it in that webhook's queue without waiting. One task per webhook sends its alerts
in order, retrying connection errors, timeouts, 429 and 5xx with exponential backoff; a receiver's other
4xx refuses the alert and it is given up at once. Only the leading replica sends (a single service always
leads); a replica that follows still tracks what it sees, and stays silent.
"""

import asyncio
import hashlib
import hmac
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson

from orthanc_jobs.core.changes import Change, JobChanged, JobStuck, ServerChanged
from orthanc_jobs.core.metrics import Metrics
from orthanc_jobs.core.model import (
    Job,
    JobState,
    Server,
    ServerStatus,
    normalize_server_url,
    orthanc_timestamp,
)
from orthanc_jobs.core.registry import Registry
from orthanc_jobs.core.wire import job_json, server_entry, server_field

__all__ = [
    "EVENTS",
    "Webhook",
    "WebhookConfigError",
    "Webhooks",
    "load_webhooks",
    "parse_webhooks",
    "public_url",
    "signature",
]

log = logging.getLogger(__name__)

JOB_FAILURE = "job-failure"
JOB_STUCK = "job-stuck"
SERVER_NOT_RESPONDING = "server-not-responding"
SERVER_STOPPED = "server-stopped"
EVENTS = (JOB_FAILURE, JOB_STUCK, SERVER_NOT_RESPONDING, SERVER_STOPPED)
_SERVER_EVENTS = {ServerStatus.NOT_RESPONDING: SERVER_NOT_RESPONDING, ServerStatus.STOPPED: SERVER_STOPPED}
MIN_SECRET_LENGTH = 16
_KEYS = ("Name", "Url", "Secret", "Events", "Types", "Servers")

# Delivery, by default: a receiver has 5 s to answer; 8 attempts 1 s, 2 s, 4 s... apart (at most 5 min);
# at most 10,000 alerts wait per webhook (then the oldest is dropped, as failed).
TIMEOUT = 5.0
ATTEMPTS = 8
FIRST_DELAY = 1.0
MAX_DELAY = 300.0
QUEUE_SIZE = 10_000
# Stopping, a delivery under way gets this long to end.
STOP_GRACE = 2.0
# Alerts dropped from a full queue are logged at most this often.
DROP_WARNING_INTERVAL = 60.0


class WebhookConfigError(ValueError):
    """The webhooks' configuration cannot be used: says which entry, and why. Never shows a secret."""


@dataclass(frozen=True, slots=True)
class Webhook:
    """One receiver of alerts, as the operator declared it."""

    name: str
    url: str
    secret: str = field(repr=False)
    events: frozenset[str] = frozenset(EVENTS)
    #: Job types as given (None: every type); matched in any case. Server events have no type.
    types: tuple[str, ...] | None = None
    #: Server names or URLs as given (None: every server).
    servers: tuple[str, ...] | None = None

    def wants(self, event: str, job_type: str | None, server_name: str | None, server_url: str) -> bool:
        if event not in self.events:
            return False
        if (
            self.types is not None
            and job_type is not None
            and job_type.lower() not in {kind.lower() for kind in self.types}
        ):
            return False
        if self.servers is not None:
            accepted = {_server_key(value) for value in self.servers}
            if server_name not in accepted and normalize_server_url(server_url) not in accepted:
                return False
        return True


def _server_key(value: str) -> str:
    """A server as a filter names it: a URL normalised as the registry keeps it, or a name as it is."""
    return normalize_server_url(value) if "://" in value else value


def signature(secret: str, body: bytes) -> str:
    """``X-Orthanc-Jobs-Signature``: the HMAC-SHA256 of the exact body with the webhook's secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def public_url(url: str) -> str:
    """A webhook's URL as it may be shown: without any ``user:password@``."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit(parts._replace(netloc=netloc))


def load_webhooks(inline: str, file: str) -> list[Webhook]:
    """The webhooks of ``ORTHANC_JOBS_WEBHOOKS`` (a JSON list) and of ``ORTHANC_JOBS_WEBHOOKS_FILE`` (a file
    holding the same list), together; names are unique across both."""
    webhooks = parse_webhooks(inline, "ORTHANC_JOBS_WEBHOOKS") if inline.strip() else []
    if file.strip():
        source = f"ORTHANC_JOBS_WEBHOOKS_FILE ({file})"
        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise WebhookConfigError(f"{source}: cannot be read: {error}") from None
        webhooks += parse_webhooks(text, source)
    seen: set[str] = set()
    for webhook in webhooks:
        if webhook.name in seen:
            raise WebhookConfigError(f"webhook {webhook.name!r}: this Name is used twice")
        seen.add(webhook.name)
    return webhooks


def parse_webhooks(text: str, source: str) -> list[Webhook]:
    """A JSON list of webhooks, each checked: the error names the entry and what is wrong with it."""
    try:
        entries = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise WebhookConfigError(f"{source}: not JSON ({error})") from None
    if not isinstance(entries, list):
        raise WebhookConfigError(f"{source}: a JSON list of webhooks is expected")
    webhooks: list[Webhook] = []
    for number, entry in enumerate(entries, start=1):
        webhook = _parse_entry(entry, f"{source}, webhook {number}")
        if any(other.name == webhook.name for other in webhooks):
            raise WebhookConfigError(
                f"{source}, webhook {number} ({webhook.name!r}): this Name is used twice"
            )
        webhooks.append(webhook)
    return webhooks


def _parse_entry(entry: Any, where: str) -> Webhook:
    if not isinstance(entry, dict):
        raise WebhookConfigError(f"{where}: an object is expected (Name, Url, Secret, Events...)")
    name = entry.get("Name")
    if not isinstance(name, str) or not name.strip():
        raise WebhookConfigError(f"{where}: Name is missing (a name for logs, metrics and the dashboard)")
    where = f"{where} ({name!r})"
    unknown = sorted(set(entry) - set(_KEYS))
    if unknown:
        raise WebhookConfigError(f"{where}: unknown key {', '.join(unknown)} (known: {', '.join(_KEYS)})")
    url = entry.get("Url")
    if not isinstance(url, str) or not url.strip():
        raise WebhookConfigError(f"{where}: Url is missing")
    # Not the URL itself in the message: it may hold a password, and cannot be split to take it out.
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises on a port that is not one
    except ValueError:
        raise WebhookConfigError(f"{where}: Url has a bad host or port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookConfigError(f"{where}: Url must be an http:// or https:// URL with a host")
    secret = entry.get("Secret")
    if not isinstance(secret, str) or not secret:
        raise WebhookConfigError(f"{where}: Secret is missing (the key the body is signed with)")
    if len(secret) < MIN_SECRET_LENGTH:
        raise WebhookConfigError(f"{where}: Secret is too short (at least {MIN_SECRET_LENGTH} characters)")
    events = _strings(entry, "Events", where)
    if events is not None:
        unknown_events = sorted(set(events) - set(EVENTS))
        if unknown_events:
            raise WebhookConfigError(
                f"{where}: unknown event {', '.join(unknown_events)} (known: {', '.join(EVENTS)})"
            )
    servers = _strings(entry, "Servers", where)
    for server in servers or ():
        try:
            _server_key(server)
        except ValueError as error:
            raise WebhookConfigError(f"{where}: Servers: {error}") from None
    return Webhook(
        name=name,
        url=url,
        secret=secret,
        events=frozenset(events) if events is not None else frozenset(EVENTS),
        types=_strings(entry, "Types", where),
        servers=servers,
    )


def _strings(entry: dict[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    """An optional non-empty list of non-empty strings (None: absent)."""
    if key not in entry or entry[key] is None:
        return None
    value = entry[key]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise WebhookConfigError(f"{where}: {key} must be a non-empty list of names")
    return tuple(value)


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert for one webhook: its body is written once, and sent as it is at every attempt."""

    event: str
    delivery: str
    body: bytes
    #: What it is about, for the logs: a job's id, or a server's name.
    subject: str


@dataclass(frozen=True, slots=True)
class _Outcome:
    delivered: bool
    retry: bool = False
    error: str = ""
    retry_after: float | None = None


class WebhookSender:
    """One webhook's queue, its worker, and what it has done (for the route and the dashboard)."""

    def __init__(
        self,
        webhook: Webhook,
        client: httpx.AsyncClient,
        metrics: Metrics,
        stopping: asyncio.Event,
        *,
        timeout: float,
        queue_size: int,
        attempts: int,
        first_delay: float,
        max_delay: float,
        sleep: Callable[[float], Awaitable[None]],
        clock: Callable[[], float],
    ) -> None:
        self.webhook = webhook
        self._client = client
        self._timeout = timeout
        self._stopping = stopping
        self._queue: deque[Alert] = deque()
        self._queue_size = queue_size
        self._attempts = attempts
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._sleep = sleep
        self._clock = clock
        self._wake = asyncio.Event()
        self.in_flight: Alert | None = None
        self.delivered = 0
        self.failed = 0
        self.attempt_failures = 0
        self.last_delivered_at: float | None = None
        self.last_failure_at: float | None = None
        self.last_error: str | None = None
        self._dropped_untold = 0
        self._last_drop_warning: float | None = None
        self._delivered_count = metrics.webhook_deliveries.labels(webhook.name, "delivered")
        self._failed_count = metrics.webhook_deliveries.labels(webhook.name, "failed")
        self._attempt_failure_count = metrics.webhook_attempt_failures.labels(webhook.name)
        self._queue_gauge = metrics.webhook_queue.labels(webhook.name)
        self._queue_gauge.set(0)

    @property
    def queued(self) -> int:
        """Alerts not delivered yet: waiting, and the one under way."""
        return len(self._queue) + (self.in_flight is not None)

    def put(self, alert: Alert) -> None:
        """Never waits: a full queue lets its oldest alert go (counted as failed)."""
        if len(self._queue) >= self._queue_size:
            dropped = self._queue.popleft()
            self._give_up(dropped, "dropped: the queue is full", log_it=False)
            self._dropped_untold += 1
            now = time.monotonic()
            if self._last_drop_warning is None or now - self._last_drop_warning >= DROP_WARNING_INTERVAL:
                log.warning(
                    "webhook %s: %d alert(s) dropped, its queue is full (%d waiting): the receiver is slower "
                    "than the alerts, or away",
                    self.webhook.name,
                    self._dropped_untold,
                    len(self._queue),
                )
                self._last_drop_warning = now
                self._dropped_untold = 0
        self._queue.append(alert)
        self._queue_gauge.set(len(self._queue))
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Send the alerts in order, until the service stops."""
        while not self._stopping.is_set():
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            alert = self.in_flight = self._queue.popleft()
            self._queue_gauge.set(len(self._queue))
            try:
                if not await self._deliver(alert):
                    self._queue.appendleft(alert)  # the service stops: told with those left
            except Exception:  # the worker must outlive anything one alert does
                log.exception("webhook %s: alert %s could not be sent", self.webhook.name, alert.delivery)
                self._give_up(alert, "internal error")
            self.in_flight = None

    def not_delivered(self) -> list[Alert]:
        """What is left when the service stops: the alert under way, and those waiting."""
        return ([self.in_flight] if self.in_flight is not None else []) + list(self._queue)

    async def _deliver(self, alert: Alert) -> bool:
        """Delivered or given up (True), or left because the service stops (False)."""
        for attempt in range(1, self._attempts + 1):
            outcome = await self._attempt(alert)
            if outcome.delivered:
                self.delivered += 1
                self.last_delivered_at = self._clock()
                self._delivered_count.inc()
                return True
            self.attempt_failures += 1
            self.last_failure_at = self._clock()
            self.last_error = outcome.error
            self._attempt_failure_count.inc()
            if not outcome.retry:
                self._give_up(alert, f"refused by the receiver: {outcome.error}")
                return True
            if attempt == self._attempts:
                break
            if not await self._pause(self._backoff(attempt, outcome.retry_after)):
                return False
        self._give_up(alert, f"{self._attempts} attempts failed, the last: {outcome.error}")
        return True

    async def _attempt(self, alert: Alert) -> _Outcome:
        headers = {
            "Content-Type": "application/json",
            "X-Orthanc-Jobs-Event": alert.event,
            "X-Orthanc-Jobs-Delivery": alert.delivery,
            "X-Orthanc-Jobs-Signature": signature(self.webhook.secret, alert.body),
        }
        # The whole attempt has the timeout (httpx's is per read: a receiver sending a byte at a time would
        # hold it for ever), and only the status is read: the answer's body, maybe endless, never is.
        try:
            async with asyncio.timeout(self._timeout):
                request = self._client.stream("POST", self.webhook.url, content=alert.body, headers=headers)
                async with request as response:
                    status = response.status_code
                    answer = f"HTTP {status} {response.reason_phrase}".strip()
                    retry_after = _retry_after(response)
        except (TimeoutError, httpx.TimeoutException):
            return _Outcome(False, retry=True, error="no answer in time")
        except httpx.TransportError as error:
            return _Outcome(False, retry=True, error=f"{type(error).__name__}: {error}".rstrip(": "))
        if 200 <= status < 300:
            return _Outcome(True)
        if status == 429 or status >= 500:
            return _Outcome(False, retry=True, error=answer, retry_after=retry_after)
        return _Outcome(False, error=answer)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Doubling from the first delay, at most the longest; a random part, so that many alerts failed
        at once are not all sent again at once; longer if the receiver asked for it (Retry-After)."""
        delay = min(self._max_delay, self._first_delay * 2 ** (attempt - 1))
        delay *= random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self._max_delay))
        return delay

    async def _pause(self, delay: float) -> bool:
        """Wait before the next attempt; False if the service stops meanwhile."""
        sleeping = asyncio.ensure_future(self._sleep(delay))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({sleeping, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
            stopping.cancel()
        return not self._stopping.is_set()

    def _give_up(self, alert: Alert, why: str, log_it: bool = True) -> None:
        self.failed += 1
        self._failed_count.inc()
        if log_it:
            log.warning(
                "webhook %s: %s alert (%s, delivery %s) not delivered: %s",
                self.webhook.name,
                alert.event,
                alert.subject,
                alert.delivery,
                why,
            )

    def status(self) -> dict[str, Any]:
        """This webhook as ``GET /orthanc-jobs/webhooks`` lists it: never its secret."""
        webhook = self.webhook
        return {
            "Name": webhook.name,
            "Url": public_url(webhook.url),
            "Events": [event for event in EVENTS if event in webhook.events],
            "Types": list(webhook.types) if webhook.types is not None else None,
            "Servers": list(webhook.servers) if webhook.servers is not None else None,
            "Delivered": self.delivered,
            "Failed": self.failed,
            "AttemptFailures": self.attempt_failures,
            "Queued": self.queued,
            "LastDeliveredAt": _time(self.last_delivered_at),
            "LastFailureAt": _time(self.last_failure_at),
            "LastError": self.last_error,
        }


def _time(epoch: float | None) -> str | None:
    return orthanc_timestamp(epoch) if epoch is not None else None


def _retry_after(response: httpx.Response) -> float | None:
    """A Retry-After in seconds (its date form is not worth reading here)."""
    value = response.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


class Webhooks:
    """Every webhook: the registry's subscriber that turns changes into alerts, and their senders."""

    def __init__(
        self,
        webhooks: Iterable[Webhook],
        registry: Registry,
        metrics: Metrics,
        *,
        replica: str,
        leading: Callable[[], bool] = lambda: True,
        client: httpx.AsyncClient | None = None,
        timeout: float = TIMEOUT,
        queue_size: int = QUEUE_SIZE,
        attempts: int = ATTEMPTS,
        first_delay: float = FIRST_DELAY,
        max_delay: float = MAX_DELAY,
        stop_grace: float = STOP_GRACE,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        self._replica = replica
        self._leading = leading
        self._clock = clock
        self._stop_grace = stop_grace
        self._stopping = asyncio.Event()
        self._client = client or httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        self.senders = [
            WebhookSender(
                webhook,
                self._client,
                metrics,
                self._stopping,
                timeout=timeout,
                queue_size=queue_size,
                attempts=attempts,
                first_delay=first_delay,
                max_delay=max_delay,
                sleep=sleep,
                clock=clock,
            )
            for webhook in webhooks
        ]
        self._tasks: list[asyncio.Task[None]] = []
        #: Each server's status as last seen here, by URL: an alert is for a change of it.
        self._statuses = {server.url: registry.server_status(server) for server in registry.servers()}

    def notice(self, change: Change) -> None:
        """A registry subscriber: only enqueues, never waits, never raises."""
        if not self.senders:
            return
        try:
            match change:
                case JobChanged(job, ended=True) if job.state == JobState.FAILURE:
                    if self._leading():
                        self._job_alert(JOB_FAILURE, job)
                case JobStuck(job, True):
                    if self._leading():
                        self._job_alert(JOB_STUCK, job)
                case ServerChanged(server):
                    self._server_changed(server)
        except Exception:  # an alert lost is better than a registry change broken in the middle
            log.exception("webhooks: the alerts of a change could not be queued")

    def _job_alert(self, event: str, job: Job) -> None:
        server = self._registry.server_by_url(job.server_url)
        name = server.name if server is not None else None
        senders = [s for s in self.senders if s.webhook.wants(event, job.type, name, job.server_url)]
        if senders:
            subject = job_json(job, server_field(self._registry, job))
            self._send(senders, event, "Job", subject, f"job {job.id}")

    def _server_changed(self, server: Server) -> None:
        status = self._registry.server_status(server)
        previous = self._statuses.get(server.url)
        self._statuses[server.url] = status
        event = _SERVER_EVENTS.get(status)
        if event is None or status is previous or not self._leading():
            return
        senders = [s for s in self.senders if s.webhook.wants(event, None, server.name, server.url)]
        if senders:
            subject = orjson.dumps(server_entry(self._registry, server))
            self._send(senders, event, "Server", subject, f"server {server.name}")

    def _send(self, senders: list[WebhookSender], event: str, key: str, subject: bytes, about: str) -> None:
        now = orthanc_timestamp(self._clock())
        for sender in senders:
            delivery = str(uuid.uuid4())
            body = orjson.dumps(
                {
                    "Event": event,
                    "Time": now,
                    "Delivery": delivery,
                    key: orjson.Fragment(subject),
                    "Service": self._replica,
                }
            )
            sender.put(Alert(event, delivery, body, about))

    def start(self) -> None:
        self._stopping.clear()
        self._tasks = [asyncio.get_running_loop().create_task(sender.run()) for sender in self.senders]

    async def stop(self) -> None:
        """Deliveries under way get a short grace; what is still queued is logged as not delivered."""
        self._stopping.set()
        for sender in self.senders:
            sender.wake()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=self._stop_grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        self._tasks = []
        for sender in self.senders:
            left = sender.not_delivered()
            if left:
                log.warning(
                    "webhook %s: %d alert(s) not delivered, the service stops (%s)",
                    sender.webhook.name,
                    len(left),
                    ", ".join(f"{alert.event} {alert.subject}" for alert in left[:5])
                    + (", ..." if len(left) > 5 else ""),
                )
        await self._client.aclose()

    def status(self) -> list[dict[str, Any]]:
        return [sender.status() for sender in self.senders]

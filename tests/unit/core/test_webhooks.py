"""Webhooks: their configuration, which changes become alerts for whom, and delivery to a real local HTTP
receiver (signed, retried with backoff, given up), with the waits between attempts recorded, not slept."""

import asyncio
import hashlib
import hmac
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from orthanc_jobs.core.metrics import Metrics
from orthanc_jobs.core.registry import Registry
from orthanc_jobs.core.store import SqliteStore
from orthanc_jobs.core.webhooks import (
    EVENTS,
    Alert,
    Webhook,
    WebhookConfigError,
    Webhooks,
    load_webhooks,
    parse_webhooks,
    public_url,
    signature,
)
from tests.unit.core.test_registry import JOB_A, JOB_B, JOB_C, Clock, job, register

SECRET = "0123456789abcdef-secret"


def entry(**fields: Any) -> dict[str, Any]:
    return {"Name": "ops", "Url": "https://alerts.example/hook", "Secret": SECRET, **fields}


# ---- configuration ---------------------------------------------------------------------------------------


def test_a_webhook_needs_only_a_name_a_url_and_a_secret() -> None:
    [webhook] = parse_webhooks(orjson.dumps([entry()]).decode(), "ORTHANC_JOBS_WEBHOOKS")
    assert webhook == Webhook("ops", "https://alerts.example/hook", SECRET)
    assert webhook.events == frozenset(EVENTS) and webhook.types is None and webhook.servers is None
    assert SECRET not in repr(webhook)


@pytest.mark.parametrize(
    ("bad", "said"),
    [
        ({"Url": None}, "webhook 1 ('ops'): Url is missing"),
        ({"Url": "ftp://alerts.example/"}, "must be an http:// or https:// URL"),
        ({"Url": "http:///path"}, "must be an http:// or https:// URL"),
        ({"Url": "http://alerts.example:99999/"}, "Url has a bad host or port"),
        ({"Url": "https://bot:pa55word@alerts.example.org:44x/hook"}, "Url has a bad host or port"),
        ({"Url": "http://[::1"}, "Url has a bad host or port"),
        ({"Secret": None}, "Secret is missing"),
        ({"Secret": "short-secret"}, "Secret is too short (at least 16 characters)"),
        ({"Events": ["job-failure", "job-lost"]}, "unknown event job-lost (known: job-failure, job-stuck"),
        ({"Events": []}, "Events must be a non-empty list"),
        ({"Types": "Archive"}, "Types must be a non-empty list"),
        ({"Servers": ["http://user:pw@orthanc-1:8042"]}, "Servers:"),
        ({"Evnets": ["job-failure"]}, "unknown key Evnets"),
        ({"Name": ""}, "webhook 1: Name is missing"),
    ],
)
def test_a_bad_entry_is_named_with_what_is_wrong(bad: dict[str, Any], said: str) -> None:
    fields = {key: value for key, value in entry(**bad).items() if value is not None}
    with pytest.raises(WebhookConfigError) as raised:
        parse_webhooks(orjson.dumps([entry(Name="first"), fields]).decode(), "ORTHANC_JOBS_WEBHOOKS")
    message = str(raised.value).replace("webhook 2", "webhook 1")
    assert message.startswith("ORTHANC_JOBS_WEBHOOKS, webhook 1") and said in message
    assert SECRET not in message and "pa55word" not in message


def test_not_a_list_not_json_and_twice_the_same_name_are_refused() -> None:
    for text, said in [
        ("{}", "a JSON list of webhooks is expected"),
        ("[{", "not JSON"),
        (orjson.dumps([entry(), entry()]).decode(), "webhook 2 ('ops'): this Name is used twice"),
    ]:
        with pytest.raises(WebhookConfigError, match="ORTHANC_JOBS_WEBHOOKS"):
            parse_webhooks(text, "ORTHANC_JOBS_WEBHOOKS")
        with pytest.raises(WebhookConfigError) as raised:
            parse_webhooks(text, "ORTHANC_JOBS_WEBHOOKS")
        assert said in str(raised.value)


def test_the_setting_and_the_file_are_read_together_with_unique_names(tmp_path: Path) -> None:
    file = tmp_path / "webhooks.json"
    file.write_text(orjson.dumps([entry(Name="pager", Events=["server-stopped"])]).decode())
    inline = orjson.dumps([entry()]).decode()
    assert [w.name for w in load_webhooks(inline, str(file))] == ["ops", "pager"]
    assert load_webhooks("", "") == []
    file.write_text(orjson.dumps([entry()]).decode())
    with pytest.raises(WebhookConfigError, match="webhook 'ops': this Name is used twice"):
        load_webhooks(inline, str(file))
    with pytest.raises(
        WebhookConfigError, match=r"ORTHANC_JOBS_WEBHOOKS_FILE \(.*missing.json\): cannot be read"
    ):
        load_webhooks("", str(tmp_path / "missing.json"))


def test_a_url_is_shown_without_its_credentials() -> None:
    assert (
        public_url("https://bot:s3cret@alerts.example:8443/hook?x=1")
        == "https://alerts.example:8443/hook?x=1"
    )
    assert public_url("http://alerts.example/hook") == "http://alerts.example/hook"


def test_filters_by_event_type_and_server() -> None:
    webhook = Webhook(
        "ops",
        "http://x/",
        SECRET,
        events=frozenset({"job-failure", "server-stopped"}),
        types=("DicomModalityStore", "archive"),
        servers=("orthanc-1", "http://127.0.0.1:8002/"),
    )
    assert webhook.wants("job-failure", "dicommodalitystore", "orthanc-1", "http://127.0.0.1:8001")
    assert webhook.wants("job-failure", "Archive", "orthanc-2", "http://127.0.0.1:8002")
    assert not webhook.wants("job-failure", "ResourceModification", "orthanc-1", "http://127.0.0.1:8001")
    assert not webhook.wants("job-failure", "Archive", "orthanc-3", "http://127.0.0.1:8003")
    assert not webhook.wants("job-stuck", "Archive", "orthanc-1", "http://127.0.0.1:8001")
    # A server has no type: the types filter is for job events.
    assert webhook.wants("server-stopped", None, "orthanc-1", "http://127.0.0.1:8001")
    assert not webhook.wants("server-stopped", None, "orthanc-3", "http://127.0.0.1:8003")


# ---- which changes are alerts ----------------------------------------------------------------------------


def _registry(clock: Clock) -> Registry:
    return Registry(
        SqliteStore(":memory:"), not_responding_after=10, stopped_after=60, stuck_after=600, clock=clock
    )


def _webhooks(
    registry: Registry, *webhooks: Webhook, leading: bool = True, clock: Clock | None = None, **options: Any
) -> tuple[Webhooks, Metrics]:
    metrics = Metrics(registry)
    hooks = Webhooks(
        webhooks or [Webhook("ops", "http://127.0.0.1:9/", SECRET)],
        registry,
        metrics,
        replica="replica-1",
        leading=lambda: leading,
        clock=clock or Clock(),
        **options,
    )
    registry.subscribers.append(hooks.notice)
    return hooks, metrics


def _queued(hooks: Webhooks, sender: int = 0) -> list[tuple[str, dict[str, Any]]]:
    return [(alert.event, orjson.loads(alert.body)) for alert in hooks.senders[sender].not_delivered()]


def test_a_failure_and_a_stuck_job_are_each_told_once() -> None:
    clock = Clock()
    registry = _registry(clock)
    hooks, _ = _webhooks(registry, clock=clock)
    server = register(registry)
    registry.apply_snapshot(server, job(JOB_A, Progress=10))
    clock.now += 600
    registry.check_stuck()
    registry.check_stuck()
    failed = job(JOB_A, "Failure", Timestamp="20261128T110000.000000", ErrorCode=9)
    registry.apply_snapshot(server, failed)
    registry.apply_snapshot(server, dict(failed, Timestamp="20261128T110001.000000"))  # polled again
    registry.apply_snapshot(server, job(JOB_B, "Success"))
    alerts = _queued(hooks)
    assert [event for event, _ in alerts] == ["job-stuck", "job-failure"]
    stuck, failure = (body for _, body in alerts)
    assert stuck["Job"]["ID"] == JOB_A and stuck["Job"]["Server"]["Stuck"] is True
    assert failure == {
        "Event": "job-failure",
        "Time": "19700112T135640.000000",
        "Delivery": failure["Delivery"],
        "Job": failure["Job"],
        "Service": "replica-1",
    }
    assert failure["Job"]["State"] == "Failure" and failure["Job"]["Server"]["Name"] == "orthanc-1"
    assert stuck["Delivery"] != failure["Delivery"]


def test_a_job_failed_by_the_service_then_by_its_owner_is_told_once_and_a_new_failure_again() -> None:
    clock = Clock()
    registry = _registry(clock)
    hooks, _ = _webhooks(registry)
    server = register(registry)
    registry.apply_snapshot(server, job(JOB_A))
    clock.now += 61  # silent: stopped, its running job failed (presumed)
    registry.check_liveness()
    assert [event for event, _ in _queued(hooks)] == ["server-stopped", "job-failure"]
    # A failed job resubmitted that fails again is a new failure.
    server = register(registry, incarnation="inc-2")
    registry.apply_snapshot(server, job(JOB_B, "Failure"))
    registry.apply_snapshot(server, job(JOB_B, "Pending", Timestamp="20261128T100002.000000"))
    registry.apply_snapshot(server, job(JOB_B, "Failure", Timestamp="20261128T100003.000000"))
    assert [event for event, _ in _queued(hooks)] == [
        "server-stopped",
        "job-failure",
        "job-failure",
        "job-failure",
    ]
    # Failed again so soon after its resubmit that no other state was seen: its CompletionTime moved.
    first = job(JOB_C, "Failure", CompletionTime="20261128T100004.000000", Timestamp="20261128T100004.000000")
    registry.apply_snapshot(server, first)
    again = dict(first, CompletionTime="20261128T100009.000000", Timestamp="20261128T100009.000000")
    registry.apply_snapshot(server, again)
    assert [event for event, _ in _queued(hooks)][-2:] == ["job-failure", "job-failure"]
    assert len(_queued(hooks)) == 6


def test_each_change_of_a_server_to_not_responding_or_stopped_is_told() -> None:
    clock = Clock()
    registry = _registry(clock)
    hooks, _ = _webhooks(registry)
    server = register(registry)
    for silence in (11, 0, 11, 50):  # not responding, back, not responding again, stopped
        clock.now += silence
        if silence == 0:
            registry.mark_seen(server)
        registry.check_liveness()
        registry.check_liveness()
    alerts = _queued(hooks)
    assert [event for event, _ in alerts] == [
        "server-not-responding",
        "server-not-responding",
        "server-stopped",
    ]
    assert alerts[2][1]["Server"]["Name"] == "orthanc-1" and alerts[2][1]["Server"]["Status"] == "stopped"
    # A gap reported changes the entry, not the status: nothing more.
    registry.report_gap(server, {"DroppedEvents": 1, "DroppedJobJson": 0, "First": 1.0, "Last": 2.0})
    assert len(_queued(hooks)) == 3


def test_alerts_go_only_to_the_webhooks_that_want_them() -> None:
    clock = Clock()
    registry = _registry(clock)
    stores = Webhook("stores", "http://127.0.0.1:9/", SECRET, types=("dicommodalitystore",))
    second = Webhook("second", "http://127.0.0.1:9/", SECRET, servers=("orthanc-2",))
    servers_only = Webhook("servers", "http://127.0.0.1:9/", SECRET, events=frozenset({"server-stopped"}))
    hooks, _ = _webhooks(registry, stores, second, servers_only)
    one, two = register(registry), register(registry, "orthanc-2", "inc-2")
    registry.apply_snapshot(one, job(JOB_A, "Failure", Type="Archive"))
    registry.apply_snapshot(two, job(JOB_B, "Failure", Type="DicomModalityStore"))
    assert [(e, b["Job"]["ID"]) for e, b in _queued(hooks, 0)] == [("job-failure", JOB_B)]
    assert [(e, b["Job"]["ID"]) for e, b in _queued(hooks, 1)] == [("job-failure", JOB_B)]
    assert _queued(hooks, 2) == []
    clock.now += 61
    registry.mark_seen(two)
    registry.check_liveness()
    assert [e for e, _ in _queued(hooks, 2)] == ["server-stopped"]


def test_a_replica_that_does_not_lead_sends_nothing() -> None:
    clock = Clock()
    registry = _registry(clock)
    hooks, _ = _webhooks(registry, leading=False)
    server = register(registry)
    registry.apply_snapshot(server, job(JOB_A, "Failure"))
    clock.now += 61
    registry.check_liveness()
    assert _queued(hooks) == []


def test_a_subscriber_call_never_raises(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    registry = _registry(clock)
    _webhooks(registry)
    server = register(registry)

    def broken(url: str) -> None:
        raise RuntimeError("broken")

    monkeypatch.setattr(registry, "server_by_url", broken)
    with caplog.at_level(logging.ERROR):
        registry.apply_snapshot(server, job(JOB_A, "Failure"))  # the registry's change is not broken
    assert registry.get_job(JOB_A).state == "Failure"
    assert "could not be queued" in caplog.text


def test_a_full_queue_drops_its_oldest_alert_as_failed(caplog: pytest.LogCaptureFixture) -> None:
    registry = _registry(Clock())
    hooks, metrics = _webhooks(registry, queue_size=3)
    sender = hooks.senders[0]
    with caplog.at_level(logging.WARNING):
        for number in range(5):
            sender.put(Alert("job-failure", f"d{number}", b"{}", f"job {number}"))
    assert [alert.delivery for alert in sender.not_delivered()] == ["d2", "d3", "d4"]
    assert sender.status()["Failed"] == 2 and sender.status()["Queued"] == 3
    assert _sample(metrics, "orthanc_jobs_webhook_deliveries_total", result="failed") == 2
    assert _sample(metrics, "orthanc_jobs_webhook_queue") == 3
    assert caplog.text.count("queue is full") == 1  # once a minute at most


def _sample(metrics: Metrics, name: str, webhook: str = "ops", **labels: str) -> float | None:
    return metrics.collectors.get_sample_value(name, {"webhook": webhook, **labels})


# ---- delivery to a real receiver ---------------------------------------------------------------------------


class Receiver:
    """A local HTTP receiver that answers each request with the next of ``answers`` (then 200); "hang":
    never answers."""

    def __init__(self, answers: list[int | str] | None = None) -> None:
        self.answers = list(answers or [])
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.arrived = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        self.arrived.set()
        answer = self.answers.pop(0) if self.answers else 200
        if answer == "hang":
            await asyncio.sleep(3600)
        if answer == 429:
            return web.Response(status=429, headers={"Retry-After": "7"})
        return web.Response(status=int(answer), text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hook", found.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    found.url = f"http://bot:pw@127.0.0.1:{port}/hook"
    yield found
    await runner.cleanup()


class Sleeps:
    """Records the waits between attempts, and waits nothing."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


async def _until(condition: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def _deliver_one_failure(
    receiver: Receiver, answers: list[int | str], **options: Any
) -> tuple[Webhooks, Metrics, Sleeps, Callable[[], Awaitable[None]]]:
    receiver.answers = answers
    clock = Clock()
    registry = _registry(clock)
    sleeps = Sleeps()
    hooks, metrics = _webhooks(registry, Webhook("ops", receiver.url, SECRET), sleep=sleeps, **options)
    hooks.start()
    server = register(registry)
    registry.apply_snapshot(server, job(JOB_A, "Failure"))
    return hooks, metrics, sleeps, hooks.stop


async def test_an_alert_is_signed_and_retried_with_backoff_until_delivered(receiver: Receiver) -> None:
    hooks, metrics, sleeps, stop = await _deliver_one_failure(receiver, [500, 503])
    try:
        await _until(lambda: hooks.senders[0].delivered == 1)
    finally:
        await stop()
    assert len(receiver.requests) == 3
    (headers, body), *_ = receiver.requests
    assert all(request == (headers, body) for request in receiver.requests)  # the same alert each time
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Orthanc-Jobs-Signature"] == f"sha256={expected}" == signature(SECRET, body)
    assert headers["Content-Type"] == "application/json" and headers["X-Orthanc-Jobs-Event"] == "job-failure"
    alert = orjson.loads(body)
    assert headers["X-Orthanc-Jobs-Delivery"] == alert["Delivery"] and alert["Job"]["ID"] == JOB_A
    assert headers["Authorization"].startswith("Basic ")  # the URL's user and password
    # 1 s then 2 s, each less a random part of at most half.
    assert 0.5 <= sleeps.waits[0] <= 1 and 1 <= sleeps.waits[1] <= 2 and len(sleeps.waits) == 2
    status = hooks.status()[0]
    assert status["Delivered"] == 1 and status["Failed"] == 0 and status["AttemptFailures"] == 2
    assert status["LastError"] == "HTTP 503 Service Unavailable" and status["LastDeliveredAt"] is not None
    assert (
        status["Url"] == receiver.url.replace("bot:pw@", "") and SECRET not in orjson.dumps(status).decode()
    )
    assert _sample(metrics, "orthanc_jobs_webhook_deliveries_total", result="delivered") == 1
    assert _sample(metrics, "orthanc_jobs_webhook_attempt_failures_total") == 2
    assert _sample(metrics, "orthanc_jobs_webhook_queue") == 0


async def test_a_refusal_is_given_up_at_once(receiver: Receiver) -> None:
    hooks, metrics, sleeps, stop = await _deliver_one_failure(receiver, [400])
    try:
        await _until(lambda: hooks.senders[0].failed == 1)
    finally:
        await stop()
    assert len(receiver.requests) == 1 and sleeps.waits == []
    assert hooks.status()[0]["LastError"] == "HTTP 400 Bad Request"
    assert _sample(metrics, "orthanc_jobs_webhook_deliveries_total", result="failed") == 1


async def test_too_many_requests_waits_as_long_as_the_receiver_asks(receiver: Receiver) -> None:
    hooks, _, sleeps, stop = await _deliver_one_failure(receiver, [429])
    try:
        await _until(lambda: hooks.senders[0].delivered == 1)
    finally:
        await stop()
    assert sleeps.waits == [7.0]


async def test_a_receiver_away_is_given_up_after_every_attempt(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # closed: nothing listens there
    receiver = Receiver()
    receiver.url = f"http://127.0.0.1:{port}/hook"
    with caplog.at_level(logging.WARNING):
        hooks, metrics, sleeps, stop = await _deliver_one_failure(receiver, [], attempts=4, max_delay=3)
        try:
            await _until(lambda: hooks.senders[0].failed == 1)
        finally:
            await stop()
    assert (
        len(sleeps.waits) == 3 and 1.5 <= sleeps.waits[2] <= 3
    )  # doubling to at most max_delay, less jitter
    assert "ConnectError" in hooks.status()[0]["LastError"]
    assert _sample(metrics, "orthanc_jobs_webhook_attempt_failures_total") == 4
    assert "4 attempts failed" in caplog.text


async def test_a_hanging_receiver_blocks_nothing_and_the_stop_tells_what_was_left(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.answers = ["hang"]
    clock = Clock()
    registry = _registry(clock)
    hooks, _ = _webhooks(registry, Webhook("ops", receiver.url, SECRET), timeout=30, stop_grace=0.2)
    hooks.start()
    server = register(registry)
    registry.apply_snapshot(server, job(JOB_A, "Failure"))
    await asyncio.wait_for(receiver.arrived.wait(), 5)
    started = time.monotonic()
    for number in range(200):
        registry.apply_snapshot(server, job(f"{number:08d}-1111-1111-1111-111111111111", "Failure"))
    assert time.monotonic() - started < 1  # only queued
    assert hooks.status()[0]["Queued"] == 201
    with caplog.at_level(logging.WARNING):
        started = time.monotonic()
        await hooks.stop()
    assert time.monotonic() - started < 2
    assert "201 alert(s) not delivered, the service stops" in caplog.text


class RawReceiver:
    """A local receiver written on asyncio's streams, to answer in ways no HTTP framework would: it reads
    the request, then hands the connection to ``answer``."""

    def __init__(self, answer: Callable[[asyncio.StreamWriter], Awaitable[None]]) -> None:
        self._answer = answer
        self.requests = 0
        self.sent = 0
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> "RawReceiver":
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/hook"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        self.requests += 1
        try:
            await self._answer(writer)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the sender hung up: what this test wants
        finally:
            writer.close()

    async def write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        self.sent += len(data)


async def _first_attempt(url: str, **options: Any) -> tuple[Webhooks, float]:
    """A failure told to ``url``: its webhooks (stopped) and how long it took to be delivered or given up."""
    registry = _registry(Clock())
    hooks, _ = _webhooks(registry, Webhook("ops", url, SECRET), sleep=Sleeps(), **options)
    hooks.start()
    started = time.monotonic()
    try:
        registry.apply_snapshot(register(registry), job(JOB_A, "Failure"))
        await _until(lambda: hooks.senders[0].delivered + hooks.senders[0].failed == 1, timeout=4)
    finally:
        await hooks.stop()
    return hooks, time.monotonic() - started


async def test_a_receiver_that_trickles_its_answer_fails_the_attempt_within_the_timeout() -> None:
    async def trickle(writer: asyncio.StreamWriter) -> None:
        # Each byte well within the timeout, so that a timeout per read never ends it.
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100:
            await receiver.write(writer, bytes([byte]))
            await asyncio.sleep(0.05)

    async with RawReceiver(trickle) as receiver:
        hooks, took = await _first_attempt(receiver.url, timeout=0.5, attempts=2)
    status = hooks.status()[0]
    assert status["Failed"] == 1 and status["AttemptFailures"] == 2 and receiver.requests == 2  # retried
    assert status["LastError"] == "no answer in time" and took < 2


async def test_a_receiver_that_sends_its_body_slowly_is_delivered_on_its_status() -> None:
    async def slow_body(writer: asyncio.StreamWriter) -> None:
        await receiver.write(writer, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):
            await asyncio.sleep(0.05)
            await receiver.write(writer, b"x")

    async with RawReceiver(slow_body) as receiver:
        hooks, took = await _first_attempt(receiver.url, timeout=3)
    assert hooks.status()[0]["Delivered"] == 1 and took < 1


async def test_an_endless_answer_is_never_read() -> None:
    chunk = b"x" * 65536

    async def endless(writer: asyncio.StreamWriter) -> None:
        await receiver.write(writer, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while True:
            await receiver.write(writer, b"%x\r\n%s\r\n" % (len(chunk), chunk))

    async with RawReceiver(endless) as receiver:
        hooks, took = await _first_attempt(receiver.url, timeout=3)
    # Delivered on its status at once: what the receiver could send meanwhile (what the sockets' buffers
    # hold) was left unread, not gathered in memory.
    assert hooks.status()[0]["Delivered"] == 1 and took < 1

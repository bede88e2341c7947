"""orthanc-jobs reporter: tells the job-service about this Orthanc and its jobs.

One file, however long: Orthanc loads a single plugin script and runs it on the system Python, where
neither the orthanc-jobs package nor anything beyond the standard library can be imported.

Load it as Orthanc's Python plugin script ("PythonScript"), or import it from your own script and call
``on_change`` from your change callback (Orthanc accepts only one callback).

Configuration, in Orthanc's configuration file (environment variables win):
    "OrthancJobs": {
        "Url": "http://127.0.0.1:8050",     # ORTHANC_JOBS_URL: where the job-service listens (below)
        "Secret": "...",                     # ORTHANC_JOBS_SECRET: this server's own secret
        "ServerUrl": "http://10.0.0.5:8042", # ORTHANC_JOBS_SERVER_URL: where the service reaches this Orthanc
        "LocalUrl": "http://127.0.0.1:8042", # where this plugin reads this Orthanc's jobs (loopback)
        "HeartbeatInterval": 2,              # seconds
        "QueueSize": 10000,                  # events kept while the job-service is unreachable
        "QueueBytes": 67108864,              # bytes of job JSON kept meanwhile
        "Timeout": 2                         # seconds, per request
    }

"Url" names the job-service, or its replicas: ["http://jobs-1:8050", "http://jobs-2:8050"], or the same
separated by commas (the only form ORTHANC_JOBS_URL takes). Entries that are not http(s) URLs are ignored,
and logged; with none left, the default. Requests go to the replica that answered last; when it cannot be
reached, times out or answers 502, 503 or 504, the same request goes to the next one, each tried once per
request (within the shutdown budget when Orthanc stops). Replicas share what they know and events are
snapshots of a job: a batch a failing replica may have stored before it failed is harmlessly sent again.

How it stays harmless inside Orthanc:
- Orthanc's threads only append to a queue (``on_change``); two threads of the plugin's own do the rest.
- A job's JSON is read over HTTP on loopback, with the plugin's REST token, never in-process: Orthanc
  1.10.1 and 1.12.7 abort (``boost::math::rounding_error``, ``terminate called``) when a plugin reads
  in-process a job whose JSON they cannot write (the progress of an asynchronous archive of nothing is
  NaN), where the same read over HTTP answers 400.
- The JSON is read when the event happens (the capture thread), not when the job-service can be reached:
  Orthanc forgets finished jobs beyond ``JobsHistorySize`` (10), so a job read only after an outage of the
  job-service would be gone.
- What waits for the job-service is bounded (``QueueSize`` events, ``QueueBytes`` of JSON), one entry per
  job (a newer event of a job replaces the older one). Beyond the bounds the oldest job JSON goes first
  (the event stays, with the job's id and end state), then the oldest events: each loss is logged as an
  error and reported with every heartbeat, so that the job-service shows the gap.
"""

import collections
import http.client
import json
import logging
import os
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

REPORTER_VERSION = "2"
DEFAULT_SERVICE_URL = "http://127.0.0.1:8050"

JOB_EVENTS = {16: "JOB_SUBMITTED", 17: "JOB_SUCCESS", 18: "JOB_FAILURE"}
ORTHANC_STOPPED_CHANGE = 11
# Shared with the job-service, which this script cannot import (tests/unit/plugin/test_agreement.py checks
# that the two agree): where its routes for this plugin are, and the header naming whose secret is sent.
INTERNAL_PREFIX = "/orthanc-jobs/internal"
SERVER_HEADER = "X-Orthanc-Jobs-Server"
# Most events, and most bytes of job JSON, sent in one request (the job-service takes 16 MiB by default).
BATCH_SIZE = 500
BATCH_BYTES = 8 * 1024 * 1024
# On shutdown, time left to flush what is queued; Orthanc's shutdown must not wait much longer.
SHUTDOWN_BUDGET = 0.8
MAX_BACKOFF = 5.0
# Answers that say a replica of the job-service cannot serve now: the same request goes to the next one.
UNAVAILABLE = (502, 503, 504)
# Answers 500 in a row to the same events, while the job-service answers heartbeats, before the events are
# judged the cause (see Reporter._isolate). 502, 503 and 504 say the service is unavailable: retried.
TRIES_BEFORE_GIVING_UP = 3
# At most one log line a minute about failing reads of this Orthanc, and about losses (or one per thousand).
LOG_INTERVAL = 60.0


class ServiceRefused(Exception):
    """The job-service answered, but with an error status."""

    def __init__(self, status):
        super().__init__(f"job-service answered {status}")
        self.status = status


class ServiceUnreachable(Exception):
    """No replica of the job-service answered a request; ``failures`` holds each one's (URL, error)."""

    def __init__(self, failures):
        super().__init__(_describe(failures) or "no job-service URL configured")
        self.failures = failures


def _describe(failures):
    return "; ".join(f"{url}: {error}" for url, error in failures)


class Isolating(Exception):
    """The job-service answered 500 to these events once too often: the next, smaller batch goes after
    the usual wait (see Reporter._isolate)."""


class OrthancAnswered(Exception):
    """This Orthanc answered a read with an unexpected status (401: the token is refused, ...)."""

    def __init__(self, status):
        super().__init__(f"Orthanc answered {status}")
        self.status = status


class SystemClock:
    """Time as the reporter sees it: heartbeats, backoff, the shutdown deadline, when events and losses
    happened. Tests give the Reporter a clock of their own, to drive time rather than wait for it."""

    def monotonic(self):
        return time.monotonic()

    def time(self):
        return time.time()

    def wait(self, condition, timeout):
        """Wait on ``condition`` (its lock held) until it is notified or ``timeout`` seconds have passed."""
        condition.wait(timeout)

    def sleep(self, seconds):
        time.sleep(seconds)


# A kept-alive connection that Orthanc closed meanwhile fails with one of these: worth one more try.
_STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class LocalOrthanc:
    """Reads this Orthanc's REST API over HTTP on loopback, with the plugin's token: one kept-alive
    connection per thread. ``get(uri)`` gives the body of a 200 answer and None for 400 (Orthanc cannot
    write that job's JSON) and 404 (the job is gone); it raises OrthancAnswered for any other status and
    OSError when Orthanc cannot be reached in ``timeout`` seconds."""

    def __init__(self, url, token, timeout):
        parts = urllib.parse.urlsplit(url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.https else 80)
        self.base = parts.path.rstrip("/")
        self.headers = {"Authorization": token} if token else {}
        self.timeout = timeout
        self.local = threading.local()

    def _connection(self):
        connection = getattr(self.local, "connection", None)
        if connection is None:
            if self.https:
                # Loopback to this very process: its certificate need not name 127.0.0.1.
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                connection = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout, context=context
                )
            else:
                connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.local.connection = connection
        return connection

    def _close(self):
        connection = getattr(self.local, "connection", None)
        self.local.connection = None
        if connection is not None:
            connection.close()

    def get(self, uri):
        reused = getattr(self.local, "connection", None) is not None
        try:
            connection = self._connection()
            connection.request("GET", self.base + uri, headers=self.headers)
            response = connection.getresponse()
            body = response.read()
        except _STALE_CONNECTION:
            self._close()
            if not reused:
                raise
            return self.get(uri)  # the kept-alive connection had been closed by Orthanc: once more
        except (OSError, http.client.HTTPException):
            self._close()  # a time-out included: not tried again, the caller waited long enough
            raise
        if response.will_close:
            self._close()
        if response.status == 200:
            return body
        if response.status in (400, 404):
            return None
        raise OrthancAnswered(response.status)


class Outbox:
    """Events waiting for the job-service, oldest first, within bounds.

    A newer event of a job that carries the job's JSON replaces the one queued (one entry per job); an
    event without JSON is queued beside it, so that it never takes away what the earlier one knew. Beyond
    ``max_bytes`` of job JSON, the oldest events lose their JSON (they keep the job's id and event);
    beyond ``max_events``, the oldest events are dropped. Both are counted, with when: the gap.

    Not thread-safe: the Reporter holds its lock around every call.
    """

    def __init__(self, max_events, max_bytes, clock=None):
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.clock = clock or SystemClock()
        self.events = collections.OrderedDict()  # key (job id, or a unique object) -> event
        self.bytes = 0
        #: (key, sequence number) of events queued with JSON, oldest first, to let go of JSON in that order.
        self.with_json = collections.deque()
        self.dropped_events = 0
        self.dropped_json = 0
        self.first_loss = None
        self.last_loss = None

    def __len__(self):
        return len(self.events)

    def __bool__(self):
        return bool(self.events)

    @staticmethod
    def key(event):
        return event.get("JobId") or object()

    def put(self, event):
        key = self.key(event)
        old = self.events.get(key)
        if old is not None and ("Job" not in event or old["_seq"] > event["_seq"]):
            key = object()
        elif old is not None:
            del self.events[key]
            self.bytes -= len(old.get("Job", b""))
        self._add(key, event, newest=True)
        return self._bound()

    def _add(self, key, event, newest):
        self.events[key] = event
        if not newest:
            self.events.move_to_end(key, last=False)
        job = event.get("Job")
        if job is not None:
            self.bytes += len(job)
            entry = (key, event["_seq"])
            self.with_json.append(entry) if newest else self.with_json.appendleft(entry)

    def take(self, count, max_bytes):
        """The oldest events, at most ``count`` and ``max_bytes`` of job JSON (at least one event)."""
        batch = []
        size = 0
        while self.events and len(batch) < count:
            key, event = next(iter(self.events.items()))
            job_size = len(event.get("Job", b""))
            if batch and size + job_size > max_bytes:
                break
            del self.events[key]
            self.bytes -= job_size
            size += job_size
            batch.append(event)
        self._forget_sent()
        return batch

    def give_back(self, batch):
        """Events whose sending failed go back in front, unless a newer event of their job, with its JSON,
        came meanwhile."""
        for event in reversed(batch):
            key = self.key(event)
            newer = self.events.get(key)
            if newer is not None:
                if "Job" in newer or "Job" not in event:
                    continue
                key = object()
            self._add(key, event, newest=False)
        return self._bound()

    def lose(self, what):
        """Count one loss ("event" or "json"), with when; returns 1, for the caller's count of losses."""
        if what == "event":
            self.dropped_events += 1
        else:
            self.dropped_json += 1
        self.last_loss = self.clock.time()
        self.first_loss = self.first_loss or self.last_loss
        return 1

    def _bound(self):
        """Enforce the bounds; returns how many losses this caused (job JSON and events)."""
        losses = 0
        while self.bytes > self.max_bytes and self.with_json:
            key, seq = self.with_json.popleft()
            event = self.events.get(key)
            if event is not None and event["_seq"] == seq and "Job" in event:
                self.bytes -= len(event.pop("Job"))
                losses += self.lose("json")
        while len(self.events) > self.max_events:
            _, event = self.events.popitem(last=False)
            self.bytes -= len(event.get("Job", b""))
            losses += self.lose("event")
        self._forget_sent()
        return losses

    def _forget_sent(self):
        """Drop the entries of events sent, replaced or stripped since (they hold no bytes, only room), once
        they outnumber the events queued: amortised O(1)."""
        if len(self.with_json) <= 2 * len(self.events) + 64:
            return
        self.with_json = collections.deque(
            (key, seq)
            for key, seq in self.with_json
            if (event := self.events.get(key)) is not None and event["_seq"] == seq and "Job" in event
        )

    def gap(self):
        """What was let go since this process started, for the heartbeats (None: nothing)."""
        if not self.first_loss:
            return None
        return {
            "DroppedEvents": self.dropped_events,
            "DroppedJobJson": self.dropped_json,
            "First": self.first_loss,
            "Last": self.last_loss,
        }


def _encode_events(incarnation, events):
    """The /events body. A job's JSON goes in as Orthanc wrote it (bytes), never parsed here: a JSON nested
    deeper than Python's recursion limit must not break the plugin. Keys starting with _ stay here."""
    parts = []
    for event in events:
        head = json.dumps({key: value for key, value in event.items() if key[0] != "_" and key != "Job"})
        job = event.get("Job")
        parts.append(head.encode() if job is None else head[:-1].encode() + b', "Job": ' + job + b"}")
    return (
        b'{"Incarnation": ' + json.dumps(incarnation).encode() + b', "Events": [' + b", ".join(parts) + b"]}"
    )


class Reporter:
    """Captures job events and sends them on threads of its own; nothing here ever blocks Orthanc's threads.

    ``service_url`` is the job-service's URL, or the list of its replicas' (see Reporter._post);
    ``read_local(uri)`` reads this Orthanc's REST API over HTTP (bytes of a 200 answer, or None);
    ``log(message)`` and ``log_error(message)`` write to Orthanc's log; ``clock`` tells the time and waits
    (SystemClock).
    """

    def __init__(
        self,
        service_url,
        secret,
        identity,
        read_local,
        log,
        heartbeat_interval=2.0,
        queue_size=10000,
        timeout=2.0,
        queue_bytes=64 * 1024 * 1024,
        log_error=None,
        clock=None,
    ):
        urls = [service_url] if isinstance(service_url, str) else list(service_url)
        self.service_urls = [url.rstrip("/") for url in urls]
        self.current = 0  # the replica requests go to first: the one that answered last
        self.secret = secret
        self.identity = identity  # Name, Url, Incarnation, Token, OrthancVersion, PluginVersion
        self.read_local = read_local
        self.log = log
        self.log_error = log_error or log
        self.heartbeat_interval = heartbeat_interval
        self.timeout = timeout
        self.clock = clock or SystemClock()
        self.lock = threading.Lock()
        self.captured = threading.Condition(self.lock)  # events waiting for their job's JSON
        self.queued = threading.Condition(self.lock)  # events waiting for the job-service
        self.captures = collections.deque()
        self.capturing = None  # the event whose job is being read
        self.sequence = 0  # events numbered in the order Orthanc emitted them
        self.queue_size = queue_size
        self.outbox = Outbox(queue_size, queue_bytes, self.clock)
        self.losses_logged = 0
        self.losses_logged_at = None
        self.read_errors = 0
        self.read_error_logged_at = None
        self.refused = 0
        self.registered = False
        self.stopping = False
        self.deadline = None
        # Looking for an event the job-service refuses (Reporter._isolate).
        self.batch_limit = BATCH_SIZE
        self.batch_bytes = BATCH_BYTES  # lowered to fit what the job-service accepts (its registration)
        self.isolating_through = None  # the newest event (_seq) of the batch first refused
        self.failures = 0  # 500 answers in a row to /events
        self.answered_since_failure = False  # the job-service answered something else meanwhile
        self.thread = threading.Thread(target=self._run, name="orthanc-jobs-reporter", daemon=True)
        self.capture_thread = threading.Thread(
            target=self._capture_loop, name="orthanc-jobs-capture", daemon=True
        )

    @property
    def queue(self):
        """The events waiting for the job-service (a copy), for tests and diagnostics."""
        with self.lock:
            return [
                {key: value for key, value in event.items() if key[0] != "_"}
                for event in self.outbox.events.values()
            ]

    @property
    def dropped(self):
        return self.outbox.dropped_events

    # ---- called from Orthanc's threads: never block ----

    def start(self):
        self.capture_thread.start()
        self.thread.start()

    def on_change(self, change_type, level, resource_id):
        if change_type in JOB_EVENTS:
            with self.lock:
                if self.stopping:
                    return
                self.sequence += 1
                event = {
                    "Type": JOB_EVENTS[change_type],
                    "JobId": resource_id,
                    "Time": self.clock.time(),
                    "_seq": self.sequence,
                }
                if len(self.captures) >= self.queue_size:
                    # Reading cannot keep up at all (the capture thread skips reads far behind already).
                    self.captures.popleft()
                    self._report_losses(self.outbox.lose("event"))
                self.captures.append(event)
                self.captured.notify()
        elif change_type == ORTHANC_STOPPED_CHANGE:
            self.stop()

    def stop(self, budget=SHUTDOWN_BUDGET):
        """Send what is queued and ORTHANC_STOPPED, giving up after ``budget`` seconds."""
        with self.lock:
            if self.stopping:
                return
            # Orthanc is going: no more reads, what waits for its JSON goes without.
            if self.capturing is not None:
                self._queue(self.capturing)
            while self.captures:
                self._queue(self.captures.popleft())
            self.sequence += 1
            self._queue({"Type": "ORTHANC_STOPPED", "_seq": self.sequence})
            self.stopping = True
            self.deadline = self.clock.monotonic() + budget
            self.captured.notify_all()
            self.queued.notify_all()
        if self.thread.is_alive():
            self.thread.join(budget + 0.1)

    def _queue(self, event):
        """Into the outbox (the lock held)."""
        self._report_losses(self.outbox.put(event))
        self.queued.notify()

    def _report_losses(self, losses):
        """Log losses as errors: at the first, then once per thousand more; never silent, never a flood."""
        outbox = self.outbox
        total = outbox.dropped_events + outbox.dropped_json
        if not losses:
            return
        now = self.clock.monotonic()
        if (
            self.losses_logged
            and total // 1000 == self.losses_logged // 1000
            and now - self.losses_logged_at < LOG_INTERVAL
        ):
            return
        self.losses_logged, self.losses_logged_at = total, now
        self.log_error(
            f"orthanc-jobs: the job-service unreachable or refusing: {outbox.dropped_events} job event(s) "
            f"dropped so far, and the JSON of {outbox.dropped_json} job(s) (QueueSize {outbox.max_events}, "
            f"QueueBytes {outbox.max_bytes}); the job-service shows this gap"
        )

    # ---- the capture thread: each job's JSON, as soon as the event happens ----

    def _capture_loop(self):
        while True:
            with self.lock:
                while not self.captures and not self.stopping:
                    self.captured.wait()
                if self.stopping:
                    return
                event = self.capturing = self.captures.popleft()
                # Far behind (reads slower than Orthanc's events): catch up without reading.
                behind = len(self.captures) >= max(1, self.queue_size // 2)
            job = None if behind else self._read_job(event["JobId"])
            with self.lock:
                self.capturing = None
                if self.stopping:
                    return  # stop() queued it already, without its JSON, before ORTHANC_STOPPED
                if job is not None and len(job) > self.batch_bytes:
                    job = None  # larger than the job-service accepts in a request: it could never go
                    self._report_losses(self.outbox.lose("json"))
                if job is not None:
                    event["Job"] = job
                elif behind:
                    self._report_losses(self.outbox.lose("json"))
                self._queue(event)

    def _read_job(self, job_id):
        """The job's JSON as Orthanc wrote it (bytes), or None: the capture thread must outlive anything."""
        try:
            body = self.read_local("/jobs/" + urllib.parse.quote(str(job_id), safe=""))
            # Orthanc writes a JSON object; anything else is not sent on.
            return bytes(body) if body and bytes(body).lstrip()[:1] == b"{" else None
        except Exception as error:  # Orthanc's HTTP server unreachable, slow, refusing the token
            self._read_failed(error)
            return None

    def _read_failed(self, error):
        self.read_errors += 1
        now = self.clock.monotonic()
        if self.read_error_logged_at is None or now - self.read_error_logged_at >= LOG_INTERVAL:
            self.read_error_logged_at = now
            self.log_error(
                f"orthanc-jobs: cannot read this Orthanc's jobs over HTTP (OrthancJobs.LocalUrl): {error}; "
                f"{self.read_errors} read(s) failed so far, their events go without the job's JSON"
            )

    # ---- the sender thread ----

    def _remaining(self):
        return None if self.deadline is None else self.deadline - self.clock.monotonic()

    def _post(self, route, body):
        """POST to the replica that answered last. When it cannot be reached (refused, reset, timed out, an
        answer cut short) or answers 502, 503 or 504, the same request goes to the next replica, each tried
        once, while Orthanc's shutdown leaves time. Any other answer comes from a live replica: it is the
        answer (ServiceRefused for an error status). When none answered: ServiceRefused for the last 502,
        503 or 504 (the service is there, busy), else ServiceUnreachable."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        failures: list[tuple[str, Exception]] = []
        unavailable = None
        for step in range(len(self.service_urls)):
            remaining = self._remaining()
            if step and remaining is not None and remaining <= 0:
                break  # Orthanc stops and its time is up: no other replica is tried
            timeout = self.timeout if remaining is None else max(0.05, min(self.timeout, remaining))
            index = (self.current + step) % len(self.service_urls)
            url = self.service_urls[index]
            try:
                answer = self._post_to(url + INTERNAL_PREFIX + route, data, timeout)
            except ServiceRefused as refused:
                if refused.status not in UNAVAILABLE:
                    self._answered_by(index, failures)
                    raise
                unavailable = refused
                failures.append((url, refused))
            # ValueError: a URL urllib cannot use, as unreachable as a closed port.
            except (OSError, http.client.HTTPException, ValueError) as error:
                failures.append((url, error))
            else:
                self._answered_by(index, failures)
                return answer
        if unavailable is not None:
            raise unavailable
        raise ServiceUnreachable(failures)

    def _answered_by(self, index, failures):
        """The replica at ``index`` answered: requests go to it first from now on (said once, on a switch)."""
        if index != self.current:
            self.current = index
            self.log(
                f"orthanc-jobs: now sending to the job-service at {self.service_urls[index]} "
                f"({_describe(failures)})"
            )

    def _post_to(self, url, data, timeout):
        request = urllib.request.Request(
            url,
            data=data,
            headers={
                "Content-Type": "application/json",
                "Authorization": "Bearer " + self.secret,
                # Whose secret this is: the job-service checks it before it reads the body.
                SERVER_HEADER: self.identity["Url"],
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return answer.read()
        except urllib.error.HTTPError as error:
            raise ServiceRefused(error.code) from None

    def _orthanc_version(self):
        # Orthanc's REST API may not answer yet at the first registration: asked again until it does.
        if not self.identity.get("OrthancVersion"):
            try:
                system = json.loads(self.read_local("/system") or b"{}")
                self.identity["OrthancVersion"] = str(system.get("Version", ""))
            except Exception:
                pass
        return self.identity.get("OrthancVersion", "")

    def _register(self):
        self._orthanc_version()
        answer = self._post("/register", self.identity)
        try:
            accepted = int(json.loads(answer or b"{}").get("MaxBodyBytes") or 0)
        except (ValueError, TypeError, AttributeError):
            accepted = 0
        if accepted > 0:
            # Half of it: room for the events' own fields; a larger body would be cut off, not answered.
            self.batch_bytes = max(1024, min(BATCH_BYTES, accepted // 2))
        if not self.registered:
            self.log(f"orthanc-jobs: registered with the job-service at {self.service_urls[self.current]}")
        self.registered = True
        self.answered_since_failure = True

    def _heartbeat(self):
        beat = {"Incarnation": self.identity["Incarnation"], "OrthancVersion": self._orthanc_version()}
        with self.lock:
            gap = self.outbox.gap()
        if gap is not None:
            beat["Gap"] = gap
        self._post("/heartbeat", beat)
        self.answered_since_failure = True

    def _take_batch(self, wait):
        with self.lock:
            if not self.outbox and not self.stopping and wait > 0:
                self.clock.wait(self.queued, wait)
            return self.outbox.take(self.batch_limit, self.batch_bytes)

    def _give_back(self, batch):
        with self.lock:
            self._report_losses(self.outbox.give_back(batch))

    def _send_events(self, batch):
        body = _encode_events(self.identity["Incarnation"], batch)
        try:
            answer = self._post("/events", body)
        except ServiceRefused as refused:
            if refused.status != 404:
                self._refused(batch, refused.status)
                return
            self.registered = False
        else:
            self._delivered(batch, answer)
            return
        # The job-service does not know this incarnation (it restarted): register (its failures are its
        # own, not the events'), then send again.
        self._register()
        try:
            answer = self._post("/events", body)
        except ServiceRefused as refused:
            self._refused(batch, refused.status)
            return
        self._delivered(batch, answer)

    def _refused(self, batch, status):
        """400 (the job-service cannot read the batch) and 413 (too large): smaller batches at once. 500
        TRIES_BEFORE_GIVING_UP times in a row while heartbeats succeed: the events are suspected. Anything
        else (502, 503: unavailable) is retried as it is, with backoff, for ever."""
        if status in (400, 413):
            self._isolate(batch, status)
            return
        if status == 500:
            self.failures += 1
            suspected = self.answered_since_failure and (
                self.isolating_through is not None or self.failures >= TRIES_BEFORE_GIVING_UP
            )
            self.answered_since_failure = False
            if suspected:
                self._isolate(batch, status)
                raise Isolating(f"the job-service answered 500 to {len(batch)} event(s) again")
        raise ServiceRefused(status)

    def _isolate(self, batch, status):
        """Find the event the job-service refuses by halves, through the usual loop (after a 500: its
        backoff, and a heartbeat answered before each halving): smaller batches; a single event refused
        goes again without its JSON, then is dropped, counted in the gap. One bad event must not hold back
        every later one."""
        self.failures = 0
        newest = max(event.get("_seq", 0) for event in batch)
        if status != 413:
            self.isolating_through = max(self.isolating_through or 0, newest)
        with self.lock:
            if len(batch) > 1:
                self.batch_limit = max(1, len(batch) // 2)
            elif "Job" in batch[0]:
                del batch[0]["Job"]
                batch[0]["_culprit"] = True  # delivered so, the search is over
                self._report_losses(self.outbox.lose("json"))
            else:
                self.log_error(
                    f"orthanc-jobs: the job-service refused an event ({status}); dropped: {batch[0]}"
                )
                self._report_losses(self.outbox.lose("event"))
                batch = []
                self._end_isolation()
            self._report_losses(self.outbox.give_back(batch))

    def _end_isolation(self):
        self.isolating_through = None
        self.batch_limit = BATCH_SIZE

    def _delivered(self, batch, answer):
        self.failures = 0
        newest = max(event.get("_seq", 0) for event in batch)
        if self.isolating_through is not None and (
            newest >= self.isolating_through or any("_culprit" in event for event in batch)
        ):
            self._end_isolation()  # the culprit went without its JSON, or no event of the batch was one
        elif self.isolating_through is None:
            self.batch_limit = min(BATCH_SIZE, self.batch_limit * 2)
        self._log_refused_events(answer)

    def _log_refused_events(self, answer):
        """The job-service judges each event: those it could not use come back with a reason."""
        try:
            refused = json.loads(answer or b"{}").get("Refused") or []
        except (ValueError, AttributeError):
            return
        for entry in refused[:10]:
            self.log_error(f"orthanc-jobs: the job-service refused an event: {entry}")
        self.refused += len(refused)

    def _abandon(self):
        """Orthanc stops and its time is up: say what the job-service will not get."""
        with self.lock:
            left = len(self.outbox)
        if left:
            self.log_error(f"orthanc-jobs: Orthanc stops: {left} event(s) not delivered to the job-service")

    def _run(self):
        backoff = 0.2
        next_heartbeat = 0.0
        while True:
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                self._abandon()
                return
            batch = []
            try:
                if not self.registered and not self.stopping:
                    self._register()
                    next_heartbeat = self.clock.monotonic() + self.heartbeat_interval
                now = self.clock.monotonic()
                if now >= next_heartbeat and not self.stopping:
                    # A 404 means the job-service forgot this incarnation: registering again follows.
                    self._heartbeat()
                    next_heartbeat = now + self.heartbeat_interval
                batch = self._take_batch(max(0.0, next_heartbeat - self.clock.monotonic()))
                if batch:
                    self._send_events(batch)
                elif self.stopping:
                    return
                backoff = 0.2
            except Exception as error:  # the sender thread must outlive anything the network does
                if isinstance(error, Isolating):
                    pass  # the batch went back already, to go smaller after the usual wait
                elif batch:
                    self._give_back(batch)
                if self.stopping and not isinstance(error, (ServiceRefused, Isolating)):
                    # Unreachable: no point in holding Orthanc's shutdown for the rest of the budget.
                    self._abandon()
                    return
                if backoff == 0.2 and not self.stopping:
                    self.log(f"orthanc-jobs: cannot reach the job-service ({error}); retrying")
                # A 404 means the job-service forgot this incarnation: register again.
                if isinstance(error, ServiceRefused) and error.status == 404:
                    self.registered = False
                # New events must not cut the backoff short (that would be one request per event); stop()
                # may, and while stopping, tries go on until the deadline (the service answers, busy).
                end = self.clock.monotonic() + (backoff if not self.stopping else min(backoff, 0.1))
                with self.lock:
                    while not self.stopping and (left := end - self.clock.monotonic()) > 0:
                        self.clock.wait(self.queued, left)
                if self.stopping and (left := end - self.clock.monotonic()) > 0:
                    self.clock.sleep(min(left, 0.1))  # stop() came during a longer wait: cut it short
                backoff = min(MAX_BACKOFF, backoff * 2)


def _service_urls(value):
    """The URLs in a ``Url`` setting (one URL, URLs separated by commas, or a list of them), each once, and
    the entries ignored for not being http(s) URLs."""
    if isinstance(value, str):
        entries = value.split(",")
    elif isinstance(value, list):
        entries = value
    else:
        entries = [] if value is None else [value]
    urls, ignored = [], []
    for entry in entries:
        url = entry.strip().rstrip("/") if isinstance(entry, str) else None
        if url == "":
            continue
        if url is None or not _is_http_url(url):
            ignored.append(entry)
        elif url not in urls:
            urls.append(url)
    return urls, ignored


def _is_http_url(url):
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises ValueError for a port that is no number, or out of range
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and port != 0


def _settings(configuration):
    section = configuration.get("OrthancJobs", {})
    scheme = "https" if configuration.get("SslEnabled") else "http"
    local_url = f"{scheme}://127.0.0.1:{int(configuration.get('HttpPort', 8042))}"
    # ORTHANC_JOBS_URL wins when it holds a usable URL, then the section's Url, then the default.
    urls, ignored = _service_urls(os.environ.get("ORTHANC_JOBS_URL"))
    if not urls:
        urls, ignored_in_section = _service_urls(section.get("Url"))
        ignored += ignored_in_section
    return {
        "Url": urls or [DEFAULT_SERVICE_URL],
        "IgnoredUrls": ignored,
        "Secret": os.environ.get("ORTHANC_JOBS_SECRET") or section.get("Secret", ""),
        "ServerUrl": os.environ.get("ORTHANC_JOBS_SERVER_URL") or section.get("ServerUrl", local_url),
        "LocalUrl": section.get("LocalUrl", local_url),
        "HeartbeatInterval": float(section.get("HeartbeatInterval", 2)),
        "QueueSize": max(1, int(section.get("QueueSize", 10000))),
        "QueueBytes": max(0, int(section.get("QueueBytes", 64 * 1024 * 1024))),
        "Timeout": float(section.get("Timeout", 2)),
    }


def _start_in_orthanc():
    import orthanc

    configuration = json.loads(orthanc.GetConfiguration())
    settings = _settings(configuration)
    if not settings["Secret"]:
        orthanc.LogError("orthanc-jobs: no secret (OrthancJobs.Secret or ORTHANC_JOBS_SECRET): reporter off")
        return None

    if settings["IgnoredUrls"]:
        orthanc.LogError(
            f"orthanc-jobs: ignored in OrthancJobs.Url or ORTHANC_JOBS_URL (not http(s) URLs): "
            f"{settings['IgnoredUrls']}; the job-service at {', '.join(settings['Url'])}"
        )
    token = orthanc.GenerateRestApiAuthorizationToken()
    identity = {
        "Name": configuration.get("Name", socket.gethostname()),
        "Url": settings["ServerUrl"],
        "Incarnation": str(uuid.uuid4()),
        "Token": token,
        "OrthancVersion": "",
        "PluginVersion": REPORTER_VERSION,
    }
    local = LocalOrthanc(settings["LocalUrl"], token, settings["Timeout"])
    reporter = Reporter(
        settings["Url"],
        settings["Secret"],
        identity,
        local.get,
        orthanc.LogWarning,
        settings["HeartbeatInterval"],
        settings["QueueSize"],
        settings["Timeout"],
        settings["QueueBytes"],
        orthanc.LogError,
    )
    reporter.start()
    # Loaded as the PythonScript itself: register the callback. Imported by a user's script: that script's
    # own callback calls on_change().
    script = configuration.get("PythonScript", "")
    if script and os.path.realpath(script) == os.path.realpath(__file__):
        orthanc.RegisterOnChangeCallback(reporter.on_change)
    return reporter


def on_change(change_type, level, resource_id):
    """Call this from your own change callback if your Python plugin script already has one."""
    if _reporter is not None:
        _reporter.on_change(change_type, level, resource_id)


try:
    import orthanc
except ImportError:
    orthanc = None
    logging.getLogger(__name__).debug("not running inside Orthanc: reporter not started")

_reporter = None
if orthanc is not None:
    try:
        _reporter = _start_in_orthanc()
    except Exception as error:  # a bad setting must not stop Orthanc from starting
        orthanc.LogError(f"orthanc-jobs: reporter not started: {error!r}")

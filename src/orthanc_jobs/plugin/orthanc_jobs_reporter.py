"""orthanc-jobs reporter: tells the job-service about this Orthanc and its jobs.

Load it as Orthanc's Python plugin script ("PythonScript"), or import it from your own script and call
``on_change`` from your change callback (Orthanc accepts only one callback). Standard library only: Orthanc
runs it on the system Python.

Configuration, in Orthanc's configuration file (environment variables win):
    "OrthancJobs": {
        "Url": "http://127.0.0.1:8050",     # ORTHANC_JOBS_URL: where the job-service listens
        "Secret": "...",                     # ORTHANC_JOBS_SECRET: the shared secret
        "ServerUrl": "http://10.0.0.5:8042", # ORTHANC_JOBS_SERVER_URL: where the service reaches this Orthanc
        "HeartbeatInterval": 2,              # seconds
        "QueueSize": 10000,                  # events kept while the job-service is unreachable
        "Timeout": 2                         # seconds, per request to the job-service
    }
"""

import collections
import json
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid

REPORTER_VERSION = "1"

JOB_EVENTS = {16: "JOB_SUBMITTED", 17: "JOB_SUCCESS", 18: "JOB_FAILURE"}
ORTHANC_STOPPED_CHANGE = 11
# Most events sent in one request.
BATCH_SIZE = 500
# On shutdown, time left to flush what is queued; Orthanc's shutdown must not wait much longer.
SHUTDOWN_BUDGET = 0.8
MAX_BACKOFF = 5.0


class ServiceRefused(Exception):
    """The job-service answered, but with an error status."""

    def __init__(self, status):
        super().__init__(f"job-service answered {status}")
        self.status = status


class Reporter:
    """Queues events and sends them on its own thread; nothing here ever blocks Orthanc's threads.

    ``rest_get(uri)`` reads Orthanc's REST API in-process (a dict, or None if it fails); ``log(message)``
    writes to Orthanc's log.
    """

    def __init__(
        self,
        service_url,
        secret,
        identity,
        rest_get,
        log,
        heartbeat_interval=2.0,
        queue_size=10000,
        timeout=2.0,
    ):
        self.service_url = service_url.rstrip("/") + "/orthanc-jobs/internal"
        self.secret = secret
        self.identity = identity  # Name, Url, Incarnation, Token, OrthancVersion
        self.rest_get = rest_get
        self.log = log
        self.heartbeat_interval = heartbeat_interval
        self.timeout = timeout
        self.queue = collections.deque()
        self.queue_size = queue_size
        self.dropped = 0
        self.registered = False
        self.condition = threading.Condition()
        self.stopping = False
        self.deadline = None
        self.thread = threading.Thread(target=self._run, name="orthanc-jobs-reporter", daemon=True)

    # ---- called from Orthanc's threads: never block ----

    def start(self):
        self.thread.start()

    def on_change(self, change_type, level, resource_id):
        if change_type in JOB_EVENTS:
            self._enqueue({"Type": JOB_EVENTS[change_type], "JobId": resource_id, "Time": time.time()})
        elif change_type == ORTHANC_STOPPED_CHANGE:
            self.stop()

    def stop(self, budget=SHUTDOWN_BUDGET):
        """Send ORTHANC_STOPPED and what is queued, giving up after ``budget`` seconds."""
        with self.condition:
            if self.stopping:
                return
            self._append({"Type": "ORTHANC_STOPPED"})
            self.stopping = True
            self.deadline = time.monotonic() + budget
            self.condition.notify()
        if self.thread.is_alive():
            self.thread.join(budget + 0.1)

    def _enqueue(self, event):
        with self.condition:
            if self.stopping:
                return
            self._append(event)
            self.condition.notify()

    def _append(self, event):
        if len(self.queue) >= self.queue_size:
            self.queue.popleft()
            self._count_dropped(1)
        self.queue.append(event)

    def _count_dropped(self, count):
        before = self.dropped
        self.dropped += count
        # Log the first drop, then once per thousand.
        if before == 0 or before // 1000 != self.dropped // 1000:
            self.log(
                f"orthanc-jobs: job-service unreachable, {self.dropped} event(s) dropped so far "
                "(oldest first); the next resynchronisation will recover them"
            )

    # ---- the sender thread ----

    def _remaining(self):
        return None if self.deadline is None else self.deadline - time.monotonic()

    def _post(self, route, payload):
        remaining = self._remaining()
        timeout = self.timeout if remaining is None else max(0.05, min(self.timeout, remaining))
        request = urllib.request.Request(
            self.service_url + route,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json", "Authorization": "Bearer " + self.secret},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                answer.read()
        except urllib.error.HTTPError as error:
            raise ServiceRefused(error.code) from None

    def _orthanc_version(self):
        # Orthanc's REST API may not answer yet at the first registration: asked again until it does.
        if not self.identity.get("OrthancVersion"):
            self.identity["OrthancVersion"] = (self.rest_get("/system") or {}).get("Version", "")
        return self.identity["OrthancVersion"]

    def _register(self):
        self._orthanc_version()
        self._post("/register", self.identity)
        if not self.registered:
            self.log(f"orthanc-jobs: registered with the job-service at {self.service_url}")
        self.registered = True

    def _take_batch(self, wait):
        with self.condition:
            if not self.queue and not self.stopping and wait > 0:
                self.condition.wait(wait)
            batch = []
            while self.queue and len(batch) < BATCH_SIZE:
                batch.append(self.queue.popleft())
            return batch

    def _give_back(self, batch):
        with self.condition:
            room = self.queue_size - len(self.queue)
            if room < len(batch):
                self._count_dropped(len(batch) - room)
                batch = batch[len(batch) - room :] if room > 0 else []
            self.queue.extendleft(reversed(batch))

    def _with_job_json(self, batch):
        for event in batch:
            if "JobId" in event and "Job" not in event and not self.stopping:
                job = self.rest_get("/jobs/" + event["JobId"])
                if job is not None:
                    event["Job"] = job
        return batch

    def _send_events(self, batch):
        payload = {"Incarnation": self.identity["Incarnation"], "Events": batch}
        try:
            self._post("/events", payload)
        except ServiceRefused as refused:
            if refused.status == 404:
                # The job-service does not know this incarnation (it restarted): register, then send again.
                self.registered = False
                self._register()
                self._post("/events", payload)
            elif refused.status in (400, 413):
                self._send_refused(batch, refused)
            else:
                raise

    def _send_refused(self, batch, refused):
        """The job-service refused a batch (too large, or an event it finds invalid): split it, then send
        the culprit without its job JSON, then drop it; retrying it as it is would block every later event."""
        if len(batch) > 1:
            half = len(batch) // 2
            self._send_events(batch[:half])
            self._send_events(batch[half:])
        elif "Job" in batch[0]:
            self._send_events([{key: value for key, value in batch[0].items() if key != "Job"}])
        else:
            self.log(f"orthanc-jobs: the job-service refused an event ({refused}); dropped: {batch[0]}")

    def _run(self):
        backoff = 0.2
        next_heartbeat = 0.0
        while True:
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                return
            batch = []
            try:
                if not self.registered and not self.stopping:
                    self._register()
                    next_heartbeat = time.monotonic() + self.heartbeat_interval
                now = time.monotonic()
                if now >= next_heartbeat and not self.stopping:
                    # A 404 means the job-service forgot this incarnation: registering again follows.
                    beat = {
                        "Incarnation": self.identity["Incarnation"],
                        "OrthancVersion": self._orthanc_version(),
                    }
                    self._post("/heartbeat", beat)
                    next_heartbeat = now + self.heartbeat_interval
                batch = self._take_batch(max(0.0, next_heartbeat - time.monotonic()))
                if batch:
                    self._send_events(self._with_job_json(batch))
                elif self.stopping:
                    return
                backoff = 0.2
            except Exception as error:  # the sender thread must outlive anything the network does
                if batch:
                    self._give_back(batch)
                if self.stopping:
                    return
                if backoff == 0.2:
                    self.log(f"orthanc-jobs: cannot reach the job-service ({error}); retrying")
                # A 404 means the job-service forgot this incarnation: register again.
                if isinstance(error, ServiceRefused) and error.status == 404:
                    self.registered = False
                # New events must not cut the backoff short (that would be one request per event); stop() may.
                end = time.monotonic() + backoff
                with self.condition:
                    while not self.stopping and (left := end - time.monotonic()) > 0:
                        self.condition.wait(left)
                backoff = min(MAX_BACKOFF, backoff * 2)


def _settings(configuration):
    section = configuration.get("OrthancJobs", {})
    scheme = "https" if configuration.get("SslEnabled") else "http"
    default_server_url = f"{scheme}://127.0.0.1:{int(configuration.get('HttpPort', 8042))}"
    return {
        "Url": os.environ.get("ORTHANC_JOBS_URL") or section.get("Url", "http://127.0.0.1:8050"),
        "Secret": os.environ.get("ORTHANC_JOBS_SECRET") or section.get("Secret", ""),
        "ServerUrl": os.environ.get("ORTHANC_JOBS_SERVER_URL")
        or section.get("ServerUrl", default_server_url),
        "HeartbeatInterval": float(section.get("HeartbeatInterval", 2)),
        "QueueSize": max(1, int(section.get("QueueSize", 10000))),
        "Timeout": float(section.get("Timeout", 2)),
    }


def _start_in_orthanc():
    import orthanc

    configuration = json.loads(orthanc.GetConfiguration())
    settings = _settings(configuration)
    if not settings["Secret"]:
        orthanc.LogError(
            "orthanc-jobs: no shared secret (OrthancJobs.Secret or ORTHANC_JOBS_SECRET): reporter off"
        )
        return None

    def rest_get(uri):
        try:
            return json.loads(orthanc.RestApiGet(uri))
        except Exception:  # e.g. a job that left Orthanc's history already
            return None

    identity = {
        "Name": configuration.get("Name", socket.gethostname()),
        "Url": settings["ServerUrl"],
        "Incarnation": str(uuid.uuid4()),
        "Token": orthanc.GenerateRestApiAuthorizationToken(),
        "OrthancVersion": "",
        "PluginVersion": REPORTER_VERSION,
    }
    reporter = Reporter(
        settings["Url"],
        settings["Secret"],
        identity,
        rest_get,
        orthanc.LogWarning,
        settings["HeartbeatInterval"],
        settings["QueueSize"],
        settings["Timeout"],
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

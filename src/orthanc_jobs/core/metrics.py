"""Prometheus metrics: jobs by state, type and server, servers up, stuck jobs, where time goes (waiting
for a slot, running), events, polls, event lag, webhook deliveries.

Changes are counted and timed by the replica that applies them (the leader, or a single service); a
follower's counters and histograms stay still. Gauges read the registry at each scrape, on every replica.
"""

import time
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as CounterMetric
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from orthanc_jobs.core.changes import Change, JobChanged
from orthanc_jobs.core.model import Job, ServerStatus, parse_orthanc_time
from orthanc_jobs.core.registry import Registry

#: Seconds: waiting for a slot and running, from a fraction of a second to a night.
DURATION_BUCKETS = (0.5, 1, 5, 15, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600)


class RegistryCollector(Collector):
    """Reads the registry at each scrape: nothing to keep in step."""

    def __init__(self, registry: Registry, clock: Callable[[], float] = time.time) -> None:
        self._registry = registry
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        names = {server.url: server.name for server in self._registry.servers()}
        jobs = GaugeMetricFamily(
            "orthanc_jobs_jobs", "Jobs known to the job-service", labels=["state", "type", "server"]
        )
        counts: Counter[tuple[str, str, str]] = Counter()
        for server_url, state, job_type, count in self._registry.tally():
            counts[state, job_type, names.get(server_url, server_url)] += count
        for (state, job_type, name), count in sorted(counts.items()):
            jobs.add_metric([state, job_type, name], count)
        yield jobs
        up = GaugeMetricFamily(
            "orthanc_jobs_server_up", "1 if the Orthanc server is alive", labels=["server"]
        )
        status = GaugeMetricFamily(
            "orthanc_jobs_server_status",
            "Status of each Orthanc server (1 for its status)",
            labels=["server", "status"],
        )
        dropped = GaugeMetricFamily(
            "orthanc_jobs_plugin_dropped_events",
            "Job events (and job JSON) a server's plugin let go while the job-service was unreachable",
            labels=["server", "what"],
        )
        for server in self._registry.servers():
            current = self._registry.server_status(server)
            up.add_metric([server.name], 1.0 if current is ServerStatus.ALIVE else 0.0)
            for candidate in ServerStatus:
                status.add_metric([server.name, str(candidate)], 1.0 if candidate is current else 0.0)
            gap = server.gap or {}
            dropped.add_metric([server.name, "event"], gap.get("DroppedEvents", 0))
            dropped.add_metric([server.name, "job_json"], gap.get("DroppedJobJson", 0))
        yield up
        yield status
        yield dropped
        stuck = GaugeMetricFamily(
            "orthanc_jobs_stuck_jobs",
            "Running jobs whose progress has not moved for ORTHANC_JOBS_STUCK_AFTER seconds",
            labels=["type", "server"],
        )
        stuck_counts = Counter(
            (job.type, names.get(job.server_url, job.server_url)) for job in self._registry.stuck_jobs()
        )
        for (job_type, name), count in sorted(stuck_counts.items()):
            stuck.add_metric([job_type, name], count)
        yield stuck
        oldest = self._registry.oldest_pending()
        yield GaugeMetricFamily(
            "orthanc_jobs_oldest_pending_age_seconds",
            "Age of the oldest pending job (waiting for a slot of its server's ConcurrentJobs); 0 if none",
            value=_age(oldest, self._clock()) if oldest is not None else 0.0,
        )


def _age(job: Job, now: float) -> float:
    created = parse_orthanc_time(job.order_key[0])
    return max(0.0, now - (created.timestamp() if created is not None else job.first_seen))


class Metrics:
    def __init__(
        self, registry: Registry, history_moved_aside: bool = False, clock: Callable[[], float] = time.time
    ) -> None:
        self._registry = registry
        self.collectors = CollectorRegistry()
        self.collectors.register(RegistryCollector(registry, clock))
        moved = Gauge(
            "orthanc_jobs_history_moved_aside",
            "1 if the history file was damaged at start and moved aside (the service started without it)",
            registry=self.collectors,
        )
        moved.set(1 if history_moved_aside else 0)
        self.events_received = CounterMetric(
            "orthanc_jobs_events_received",
            "Events received from the reporter plugins",
            ["type"],
            registry=self.collectors,
        )
        self.poll_duration = Histogram(
            "orthanc_jobs_poll_duration_seconds",
            "Duration of one round of polls (unfinished jobs) or resynchronisations",
            ["kind"],
            registry=self.collectors,
        )
        self.lookup_rounds = CounterMetric(
            "orthanc_jobs_lookup_rounds",
            "Rounds of GET /jobs asked of a server for job ids not known yet (one round answers for "
            "every id waiting)",
            ["server"],
            registry=self.collectors,
        )
        self.query_lookup_rounds = CounterMetric(
            "orthanc_jobs_query_lookup_rounds",
            "Rounds of GET /queries asked of a server for query handles not known yet",
            ["server"],
            registry=self.collectors,
        )
        self.unknown_jobs = CounterMetric(
            "orthanc_jobs_unknown_job_lookups",
            "Job ids asked for that no live server holds (answered 404)",
            registry=self.collectors,
        )
        self.pools_replaced = Gauge(
            "orthanc_jobs_orthanc_pools_replaced",
            "Connection pools to the Orthanc servers replaced since start, because an error broke out of "
            "one (e.g. the process ran out of file handles)",
            registry=self.collectors,
        )
        self.leader = Gauge(
            "orthanc_jobs_leader",
            "1 while this replica leads (decides for the whole cluster); a single service always does",
            registry=self.collectors,
        )
        self.change_log_followed = Gauge(
            "orthanc_jobs_change_log_followed",
            "1 while this replica reads the other replicas' changes (PostgreSQL), 0 while it cannot; "
            "a single service on SQLite: 1",
            registry=self.collectors,
        )
        self.finished = CounterMetric(
            "orthanc_jobs_finished",
            "Jobs that ended (Success or Failure; lost with their process: Failure), as applied here",
            ["state", "type", "server"],
            registry=self.collectors,
        )
        self.wait_seconds = Histogram(
            "orthanc_jobs_wait_seconds",
            "From a job's creation to its start: waiting for a slot of its server's ConcurrentJobs",
            ["type", "server"],
            buckets=DURATION_BUCKETS,
            registry=self.collectors,
        )
        self.run_seconds = Histogram(
            "orthanc_jobs_run_seconds",
            "From a job's start to its end: Orthanc's EffectiveRuntime (time paused not counted)",
            ["type", "server"],
            buckets=DURATION_BUCKETS,
            registry=self.collectors,
        )
        self.webhook_deliveries = CounterMetric(
            "orthanc_jobs_webhook_deliveries",
            "Alerts sent to a webhook: delivered, or failed (given up after every retry)",
            ["webhook", "result"],
            registry=self.collectors,
        )
        self.webhook_attempt_failures = CounterMetric(
            "orthanc_jobs_webhook_attempt_failures",
            "Attempts to deliver an alert to a webhook that failed (retried or not)",
            ["webhook"],
            registry=self.collectors,
        )
        self.webhook_queue = Gauge(
            "orthanc_jobs_webhook_queue",
            "Alerts waiting to be delivered to a webhook",
            ["webhook"],
            registry=self.collectors,
        )
        self.event_lag = Histogram(
            "orthanc_jobs_event_lag_seconds",
            "From Orthanc's change (the plugin's clock) to the change being visible in the API",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.collectors,
        )

    def record(self, change: Change) -> None:
        """A registry subscriber: jobs ended, and how long they waited for their first slot and ran (on
        their owner's clock: core/registry.py measures the wait when a job is first seen started)."""
        if not isinstance(change, JobChanged) or not (change.first_start or change.ended):
            return
        job = change.job
        server = self._registry.server_by_url(job.server_url)
        labels = (job.type or "unknown", server.name if server is not None else job.server_url)
        if change.first_start and job.waited is not None:
            self.wait_seconds.labels(*labels).observe(job.waited)
        if change.ended:
            self.finished.labels(job.state, *labels).inc()
            ran = job.running_time
            if ran is not None:
                self.run_seconds.labels(*labels).observe(ran)

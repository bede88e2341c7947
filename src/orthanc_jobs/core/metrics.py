"""Prometheus metrics: jobs by state, type and server, servers up, events, polls, event lag."""

from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as CounterMetric
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from orthanc_jobs.core.model import ServerStatus
from orthanc_jobs.core.registry import Registry


class RegistryCollector(Collector):
    """Reads the registry at each scrape: nothing to keep in step."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

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


class Metrics:
    def __init__(self, registry: Registry, history_moved_aside: bool = False) -> None:
        self.collectors = CollectorRegistry()
        self.collectors.register(RegistryCollector(registry))
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
        self.event_lag = Histogram(
            "orthanc_jobs_event_lag_seconds",
            "From Orthanc's change (the plugin's clock) to the change being visible in the API",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.collectors,
        )

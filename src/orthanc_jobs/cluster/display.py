"""What ``cluster up`` and ``cluster status`` print: where everything is, and what runs."""

from collections.abc import Mapping

from orthanc_jobs import SERVICE_PREFIX
from orthanc_jobs.cluster.replicas import ReplicaHealth
from orthanc_jobs.cluster.state import ClusterState


def describe(state: ClusterState) -> str:
    lines = [
        f"Load balancer (Orthanc API, user demo / password demo): {state.orthanc_lb_url}/",
        f"  Orthanc Explorer:       {state.orthanc_lb_url}/app/explorer.html",
        f"  Cluster jobs:           {state.orthanc_lb_url}/jobs?expand",
        f"  Dashboard:              {state.lb_url}{SERVICE_PREFIX}/ui/",
        f"  Servers of the cluster: {state.lb_url}{SERVICE_PREFIX}/servers",
        f"  OpenAPI description:    {state.lb_url}{SERVICE_PREFIX}/openapi.json",
    ]
    if len(state.service_urls) == 1:
        lines += [
            f"Job-service (direct):     {state.service_url}",
            f"  Metrics (Prometheus):   {state.service_url}/metrics",
        ]
    else:
        lines.append(f"Job-service, {len(state.service_urls)} replicas (direct, each with its /metrics):")
        lines += [f"  {name + ':':<22}{url}" for name, url in state.service_urls.items()]
    for name, url in state.orthanc_urls.items():
        lines.append(f"{name}: {url}  (through nginx: {state.lb_url}/{name}/)")
    lines.append(f"State, configurations and logs: {state.directory}")
    return "\n".join(lines)


def status_lines(
    state: ClusterState,
    replicas: Mapping[str, ReplicaHealth] | None = None,
    versions: Mapping[str, str | None] | None = None,
) -> tuple[list[str], bool]:
    """One line per process, and whether all are well: running and, for the job-service's replicas asked
    (``replicas``, by name), answering; the one holding the lease is the leader. ``versions``: each
    Orthanc server's version, by name (None: it did not say)."""
    lines = []
    healthy = True
    for process in state.processes:
        running = process.is_running()
        healthy = healthy and running
        line = f"{process.name:<14} pid {process.pid:<8} {'running' if running else 'NOT RUNNING'}"
        health = (replicas or {}).get(process.name)
        if running and health is not None:
            healthy = healthy and health.answered
            line += _replica_note(health)
        version = (versions or {}).get(process.name)
        if running and version:
            line += f"  Orthanc {version}"
        lines.append(line)
    return lines, healthy


def _replica_note(health: ReplicaHealth) -> str:
    if not health.answered:
        return "  NOT ANSWERING on /healthz"
    if health.leader is None:  # a job-service from before replicas does not say
        return ""
    return "  leader" if health.leader else "  follower"

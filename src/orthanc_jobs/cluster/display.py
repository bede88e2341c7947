"""What ``cluster up`` and ``cluster status`` print: where everything is, and what runs."""

from orthanc_jobs import SERVICE_PREFIX
from orthanc_jobs.cluster.state import ClusterState


def describe(state: ClusterState) -> str:
    lines = [
        f"Load balancer (Orthanc API, user demo / password demo): {state.orthanc_lb_url}/",
        f"  Orthanc Explorer:       {state.orthanc_lb_url}/app/explorer.html",
        f"  Cluster jobs:           {state.orthanc_lb_url}/jobs?expand",
        f"  Dashboard:              {state.lb_url}{SERVICE_PREFIX}/ui/",
        f"  Servers of the cluster: {state.lb_url}{SERVICE_PREFIX}/servers",
        f"  OpenAPI description:    {state.lb_url}{SERVICE_PREFIX}/openapi.json",
        f"Job-service (direct):     {state.service_url}",
        f"  Metrics (Prometheus):   {state.service_url}/metrics",
    ]
    for name, url in state.orthanc_urls.items():
        lines.append(f"{name}: {url}  (through nginx: {state.lb_url}/{name}/)")
    lines.append(f"State, configurations and logs: {state.directory}")
    return "\n".join(lines)


def status_lines(state: ClusterState) -> tuple[list[str], bool]:
    lines = []
    healthy = True
    for process in state.processes:
        running = process.is_running()
        healthy = healthy and running
        lines.append(f"{process.name:<14} pid {process.pid:<8} {'running' if running else 'NOT RUNNING'}")
    return lines, healthy

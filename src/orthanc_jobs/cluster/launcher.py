"""The local cluster: PostgreSQL, N Orthanc servers, the job-service (one or more replicas) and nginx, on
loopback.

Everything lives in one state folder (``--dir``): configurations, data, logs and ``cluster.json``, which
records the processes started, by id, so that ``down`` stops exactly those. This module starts and stops the
whole; the other modules of this folder hold the parts, and the names importers use are re-exported here.
"""

import json
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orthanc_jobs.cluster import ClusterError, processes, starters
from orthanc_jobs.cluster.binaries import DEBIAN_PACKAGES, Binaries, find_binaries
from orthanc_jobs.cluster.config import DEMO_USER, REPORTER_PATH, orthanc_configuration
from orthanc_jobs.cluster.display import describe, status_lines
from orthanc_jobs.cluster.ports import free_port, free_ports, usable_port
from orthanc_jobs.cluster.processes import OwnedProcess
from orthanc_jobs.cluster.replicas import ask_replicas, replica_names, service_database_for
from orthanc_jobs.cluster.state import STATE_FILE, ClusterState
from orthanc_jobs.cluster.versions import ask_orthanc_versions

__all__ = [
    "DEBIAN_PACKAGES",
    "DEMO_USER",
    "REPORTER_PATH",
    "SAME_ROOT",
    "STATE_FILE",
    "Binaries",
    "ClusterError",
    "ClusterState",
    "ask_orthanc_versions",
    "ask_replicas",
    "describe",
    "down",
    "find_binaries",
    "free_port",
    "orthanc_configuration",
    "service_database_for",
    "start_process",
    "status_lines",
    "stop_process",
    "up",
    "usable_port",
]


def up(
    directory: Path,
    *,
    instances: int = 3,
    lb_port: int = 8042,
    orthanc_overrides: dict[str, Any] | None = None,
    service_settings: dict[str, str] | None = None,
    orthanc_root: Path | None = None,
    server_roots: Mapping[str, Path | None] | None = None,
    service_replicas: int = 1,
    service_database: str | None = None,
    say: Any = print,
) -> ClusterState:
    """Start the whole cluster and wait until every Orthanc is registered with the job-service.

    ``service_database``: 'sqlite' or 'postgresql'; by default SQLite for one replica, PostgreSQL for more.
    ``server_roots``: the Debian root some servers run Orthanc from, by name (None: the system's), instead of
    ``orthanc_root``: a cluster of mixed versions, as during an upgrade.
    """
    if instances < 1:
        raise ClusterError("--instances must be at least 1")
    service_names = replica_names(service_replicas)
    service_database = service_database_for(service_replicas, service_database)
    names = [f"orthanc-{number}" for number in range(1, instances + 1)]
    unknown = sorted(set(server_roots or {}) - set(names))
    if unknown:
        raise ClusterError(
            f"no server named {', '.join(unknown)} in this cluster (there are: {', '.join(names)})"
        )
    binaries = find_binaries(orthanc_root)
    roots = {name: (server_roots or {}).get(name, orthanc_root) for name in names}
    found = {root: find_binaries(root) for root in set(roots.values())}
    binaries_of = {name: found[root] for name, root in roots.items()}
    root = directory.resolve()
    if (root / STATE_FILE).exists():
        try:
            existing = ClusterState.load(root)
        except (ClusterError, ValueError, TypeError):
            existing = None
        if existing and any(p.is_running() or p.group_alive() for p in existing.processes):
            raise ClusterError(
                f"a cluster already runs in {root}; stop it first: orthanc-jobs cluster down --dir {root}"
            )
        (root / STATE_FILE).unlink()
    root.mkdir(parents=True, exist_ok=True)
    logs = root / "logs"
    logs.mkdir(exist_ok=True)

    lb_port = usable_port(lb_port)
    # The ports are chosen first: the job-service is told which servers may register (the callers'
    # credentials go to them), each server's plugin gets a secret of its own and every replica's URL.
    chosen = free_ports(service_replicas + instances)
    service_ports, ports = chosen[:service_replicas], chosen[service_replicas:]
    service_urls = {
        name: f"http://127.0.0.1:{port}" for name, port in zip(service_names, service_ports, strict=True)
    }
    secret = secrets.token_urlsafe(24)
    state = ClusterState(
        directory=str(root),
        lb_url=f"http://127.0.0.1:{lb_port}",
        service_url=next(iter(service_urls.values())),
        orthanc_urls={},
        secret=secret,
        service_urls=service_urls,
    )
    settings = dict(service_settings or {})
    declared = [f"http://127.0.0.1:{port}" for port in ports]
    settings["allowed_server_urls"] = ",".join(
        [*declared, *filter(None, [settings.get("allowed_server_urls")])]
    )
    try:
        pg_port = starters.start_postgresql(state, root, binaries, say)
        if service_database == "postgresql":
            # The cluster's own database, in a schema of the service's (loopback, as every process here).
            settings.setdefault("database", f"postgresql://postgres@127.0.0.1:{pg_port}/postgres")
        starters.start_services(state, secret, settings, say)
        starters.start_orthancs(
            state, root, ports, pg_port, secret, binaries_of, orthanc_overrides or {}, say
        )
        starters.start_nginx(state, root, lb_port, binaries, say)
        starters.wait_registered(state, instances)
    except BaseException:
        say("start failed: stopping what was started")
        processes.stop(list(reversed(state.processes)))
        raise
    return state


def down(directory: Path, say: Any = print) -> None:
    state = ClusterState.load(directory.resolve())
    # nginx first (no new requests), then Orthanc (their reporters say ORTHANC_STOPPED), service, database.
    order = {"nginx": 0, "orthanc": 1, "job-service": 2, "postgresql": 3}
    ordered = sorted(state.processes, key=lambda p: order.get(p.role, 9))
    running = [p for p in ordered if p.is_running() or p.group_alive()]
    for group in sorted({order.get(p.role, 9) for p in running}):
        processes.stop([p for p in running if order.get(p.role, 9) == group])
    forced = [p for p in running if p.is_running() or p.group_alive()]
    if forced:
        raise ClusterError("could not stop: " + ", ".join(f"{p.name} ({p.pid})" for p in forced))
    say(f"stopped {len(running)} process(es) of the cluster in {state.directory}")


def stop_process(directory: Path, name: str) -> None:
    """Stop one process of the cluster (e.g. to see how the others cope)."""
    state = ClusterState.load(directory.resolve())
    processes.stop([state.find_process(name)])


#: ``start_process``'s Orthanc root when the server keeps the one it ran from.
SAME_ROOT = Path()


def start_process(directory: Path, name: str, orthanc_root: Path | None = SAME_ROOT) -> OwnedProcess:
    """Start again one process of the cluster that was stopped (or killed), and wait until it is ready.

    ``orthanc_root``, for an Orthanc server: start it from this Debian root instead (None: the system's
    Orthanc), on the same configuration, database and storage: one server upgraded (or downgraded).
    """
    state = ClusterState.load(directory.resolve())
    process = state.find_process(name)
    if process.is_running():
        raise ClusterError(f"{name} is running already (pid {process.pid})")
    if orthanc_root is SAME_ROOT:
        started = processes.respawn(process)
    elif process.role != "orthanc":
        raise ClusterError(f"{name} is not an Orthanc server: only those run from another root")
    else:
        binaries = find_binaries(orthanc_root)
        config_path = Path(state.directory) / name / "orthanc.json"
        configuration = json.loads(config_path.read_text())
        configuration["Plugins"] = binaries.plugins
        processes.write_private(config_path, json.dumps(configuration, indent=2))
        started = processes.spawn(
            "orthanc",
            name,
            binaries.orthanc_command(config_path),
            Path(process.log),
            env=binaries.orthanc_env,
        )
    state.processes[state.processes.index(process)] = started
    state.save()
    if started.role == "orthanc":
        starters.wait_orthanc(state, name, started)
    elif started.role == "job-service":
        starters.wait_service(state, started)
    return started

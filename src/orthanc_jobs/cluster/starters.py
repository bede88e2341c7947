"""Starting each process of the cluster, recording it in the state at once, and waiting until it is ready."""

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from orthanc_jobs import SERVICE_PREFIX
from orthanc_jobs.cluster import ClusterError, processes
from orthanc_jobs.cluster.binaries import Binaries
from orthanc_jobs.cluster.config import (
    DEMO_USER,
    initdb_command,
    nginx_configuration,
    orthanc_configuration,
    postgres_command,
)
from orthanc_jobs.cluster.ports import free_port
from orthanc_jobs.cluster.processes import OwnedProcess
from orthanc_jobs.cluster.state import ClusterState
from orthanc_jobs.core.model import plugin_secret_for


def start_postgresql(state: ClusterState, root: Path, binaries: Binaries, say: Any) -> int:
    user = processes.unprivileged_user()
    data = root / "postgresql"
    socket_dir = root / "postgresql-socket"
    socket_dir.mkdir(exist_ok=True)
    data.mkdir(exist_ok=True)
    if user is not None:
        # PostgreSQL refuses to run as root: its folders belong to an unprivileged user, who must reach them.
        root.chmod(0o755)
        for path in (data, socket_dir):
            shutil.chown(path, user=user)
        data.chmod(0o700)
        if subprocess.run(["test", "-w", str(data)], user=user, check=False).returncode != 0:
            raise ClusterError(
                f"PostgreSQL runs as user {user!r}, who cannot reach {data}: "
                "choose a --dir whose parent folders others may enter (e.g. under /tmp or the project)"
            )
    port = free_port()
    log = root / "logs" / "postgresql.log"
    if not (data / "PG_VERSION").exists():
        say(f"initialising PostgreSQL in {data}")
        processes.run(initdb_command(binaries, data), user=user, log_path=log)
    process = processes.spawn(
        "postgresql",
        "postgresql",
        postgres_command(binaries, data, port, socket_dir),
        log,
        user=user,
        cwd=Path("/"),
    )
    state.processes.append(process)
    state.save()
    pg_isready = str(binaries.postgres_bin / "pg_isready")

    def ready() -> bool:
        return os.system(f"{pg_isready} -q -h 127.0.0.1 -p {port} -U postgres") == 0

    _wait_until("PostgreSQL", ready, 60, process)
    return port


def start_services(state: ClusterState, secret: str, settings: dict[str, str], say: Any) -> None:
    """Every replica of the job-service (``state.service_urls``), each on its own port, with the same settings
    and secret, and its own name; all of a replica's settings are in its environment."""
    env = {"ORTHANC_JOBS_DATABASE": str(Path(state.directory) / "job-service.sqlite3")}
    env.update({f"ORTHANC_JOBS_{key.upper()}": value for key, value in settings.items()})
    env["ORTHANC_JOBS_SECRET"] = secret
    env["ORTHANC_JOBS_HOST"] = "127.0.0.1"
    started = []
    for name, url in state.service_urls.items():
        process = processes.spawn(
            "job-service",
            name,
            [sys.executable, "-m", "orthanc_jobs", "serve"],
            Path(state.directory) / "logs" / f"{name}.log",
            env={**env, "ORTHANC_JOBS_PORT": str(urlsplit(url).port), "ORTHANC_JOBS_REPLICA_NAME": name},
        )
        state.processes.append(process)
        state.save()
        started.append(process)
    for process in started:
        wait_service(state, process)
        say(f"{process.name} ready on {state.service_urls[process.name]}")


def start_orthancs(
    state: ClusterState,
    root: Path,
    ports: list[int],
    pg_port: int,
    secret: str,
    binaries_of: Mapping[str, Binaries],
    overrides: dict[str, Any],
    say: Any,
) -> None:
    """Start the servers, ``binaries_of`` each (by name): the same Orthanc for all, or mixed versions."""
    started = []
    for number, http_port in enumerate(ports, start=1):
        name = f"orthanc-{number}"
        binaries = binaries_of[name]
        configuration = orthanc_configuration(
            name=name,
            http_port=http_port,
            dicom_port=free_port(),
            root=root,
            pg_port=pg_port,
            service_urls=list(state.service_urls.values()),
            plugin_secret=plugin_secret_for(secret, f"http://127.0.0.1:{http_port}"),
            binaries=binaries,
            overrides=overrides,
        )
        config_path = root / name / "orthanc.json"
        processes.write_private(config_path, json.dumps(configuration, indent=2))
        process = processes.spawn(
            "orthanc",
            name,
            binaries.orthanc_command(config_path),
            root / "logs" / f"{name}.log",
            env=binaries.orthanc_env,
        )
        state.processes.append(process)
        state.orthanc_urls[name] = f"http://127.0.0.1:{http_port}"
        state.save()
        started.append((name, process))
        if number == 1:
            # The first server creates the database schema; the others must not race it.
            wait_orthanc(state, name, process)
    for name, process in started[1:]:
        wait_orthanc(state, name, process)
    say(f"{len(ports)} Orthanc server(s) ready: " + ", ".join(state.orthanc_urls.values()))


def start_nginx(state: ClusterState, root: Path, lb_port: int, binaries: Binaries, say: Any) -> None:
    prefix = root / "nginx"
    for folder in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / "temp" / folder).mkdir(parents=True, exist_ok=True)
    service_urls = list(state.service_urls.values())
    (prefix / "nginx.conf").write_text(nginx_configuration(prefix, lb_port, service_urls, state.orthanc_urls))
    process = processes.spawn(
        "nginx",
        "nginx",
        [binaries.nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
        root / "logs" / "nginx.log",
    )
    state.processes.append(process)
    state.save()
    _wait_until("nginx", lambda: _http_ok(f"{state.lb_url}/orthanc/system", DEMO_USER), 30, process)
    say(f"nginx (load balancer) ready on {state.lb_url}")


def wait_orthanc(state: ClusterState, name: str, process: OwnedProcess) -> None:
    url = state.orthanc_urls[name] + "/system"
    _wait_until(f"Orthanc {name}", lambda: _http_ok(url, DEMO_USER), 60, process)


def wait_service(state: ClusterState, process: OwnedProcess) -> None:
    """Until this replica (not the first one) answers on its own port."""
    url = state.service_urls[process.name] + "/healthz"
    _wait_until(process.name, lambda: _http_ok(url), 30, process)


def wait_registered(state: ClusterState, instances: int) -> None:
    def all_alive() -> bool:
        answer = httpx.get(f"{state.lb_url}{SERVICE_PREFIX}/servers", auth=DEMO_USER, timeout=2)
        alive = [s for s in answer.json() if s["Status"] == "alive"] if answer.status_code == 200 else []
        return len(alive) >= instances

    _wait_until("registration of every Orthanc with the job-service", all_alive, 30)


def _wait_until(what: str, check: Any, timeout: float, process: OwnedProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not process.is_running():
            raise ClusterError(f"{what} exited at start; see its log: {process.log}")
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.1)
    raise ClusterError(
        f"{what} not ready after {timeout:.0f} s" + (f"; see {process.log}" if process else "")
    )


def _http_ok(url: str, auth: tuple[str, str] | None = None) -> bool:
    return httpx.get(url, auth=auth, timeout=2).status_code == 200

"""The local cluster: PostgreSQL, N Orthanc servers, the job-service and nginx, on loopback.

Everything lives in one state folder (``--dir``): configurations, data, logs and ``cluster.json``, which
records the processes started, by id, so that ``down`` stops exactly those.
"""

import glob
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from orthanc_jobs import SERVICE_PREFIX
from orthanc_jobs.cluster import processes
from orthanc_jobs.cluster.processes import OwnedProcess
from orthanc_jobs.core.model import plugin_secret_for

DEBIAN_PACKAGES = "orthanc orthanc-python orthanc-postgresql nginx-light postgresql"
DEMO_USER = ("demo", "demo")
STATE_FILE = "cluster.json"
_TEMPLATES = Path(__file__).parent
REPORTER_PATH = Path(__file__).parent.parent / "plugin" / "orthanc_jobs_reporter.py"


class ClusterError(Exception):
    """Something the user can fix: a missing package, a busy port, no cluster in that folder."""


@dataclass
class ClusterState:
    directory: str
    lb_url: str
    service_url: str
    orthanc_urls: dict[str, str]
    secret: str
    processes: list[OwnedProcess] = field(default_factory=list)

    @property
    def orthanc_lb_url(self) -> str:
        return self.lb_url + "/orthanc"

    def save(self) -> None:
        data = {
            "directory": self.directory,
            "lb_url": self.lb_url,
            "service_url": self.service_url,
            "orthanc_urls": self.orthanc_urls,
            "secret": self.secret,
            "processes": [p.to_json() for p in self.processes],
        }
        processes.write_private(Path(self.directory) / STATE_FILE, json.dumps(data, indent=2))

    @classmethod
    def load(cls, directory: Path) -> "ClusterState":
        path = directory / STATE_FILE
        if not path.exists():
            raise ClusterError(f"no cluster in {directory} (no {STATE_FILE})")
        data = json.loads(path.read_text())
        data["processes"] = [OwnedProcess(**p) for p in data["processes"]]
        return cls(**data)


@dataclass
class Binaries:
    orthanc: str
    nginx: str
    postgres_bin: Path
    postgresql_index_plugin: str
    python_plugin: str
    #: How Orthanc is started: the loader and environment of another Debian root (see find_binaries).
    orthanc_prefix: list[str] = field(default_factory=list)
    orthanc_env: dict[str, str] = field(default_factory=dict)

    def orthanc_command(self, config_path: Path) -> list[str]:
        return [*self.orthanc_prefix, self.orthanc, str(config_path)]


def find_binaries(orthanc_root: Path | None = None) -> Binaries:
    """The system's programs; Orthanc and its plugins from ``orthanc_root`` if given.

    ``orthanc_root`` is another Debian installed in a folder (``scripts/install-orthanc-root.sh`` makes one
    with Orthanc 1.12 from Debian 13): its Orthanc runs through that root's own loader and libraries, and
    its Python plugin on that root's Python, without chroot.
    """
    missing = []
    nginx = shutil.which("nginx") or _first(["/usr/sbin/nginx"])
    postgres_dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    prefix: list[str] = []
    env: dict[str, str] = {}
    if orthanc_root is None:
        orthanc = shutil.which("Orthanc") or _first(["/usr/sbin/Orthanc"])
        plugin_dirs = ["/usr/share/orthanc/plugins", "/usr/lib/orthanc", "/usr/local/share/orthanc/plugins"]
    else:
        root = orthanc_root.resolve()
        orthanc = _first([str(root / "usr/sbin/Orthanc")])
        plugin_dirs = [str(root / "usr/lib/orthanc")]
        loader = _first([str(root / "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")])
        if loader is None:
            missing.append(f"a Debian root at {root} (its usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2)")
        libraries = f"{root}/usr/lib/x86_64-linux-gnu:{root}/lib/x86_64-linux-gnu"
        prefix = [str(loader), "--library-path", libraries]
        env = {"PYTHONHOME": str(root / "usr"), "DCMDICTPATH": str(root / "usr/share/dcmtk/dicom.dic")}
    pg_plugin = _first([f"{d}/libOrthancPostgreSQLIndex.so*" for d in plugin_dirs])
    python_plugin = _first([f"{d}/libOrthancPython.so*" for d in plugin_dirs])
    for what, found in [
        ("Orthanc (package orthanc)", orthanc),
        ("nginx (package nginx-light)", nginx),
        ("PostgreSQL (package postgresql)", postgres_dirs),
        ("Orthanc's PostgreSQL plugin (package orthanc-postgresql)", pg_plugin),
        ("Orthanc's Python plugin (package orthanc-python)", python_plugin),
    ]:
        if not found:
            missing.append(what)
    if missing:
        hint = f"On Debian/Ubuntu: sudo apt-get install {DEBIAN_PACKAGES}"
        if orthanc_root is not None:
            hint = f"Make that root with: scripts/install-orthanc-root.sh {orthanc_root}"
        raise ClusterError("missing: " + "; ".join(missing) + f".\n{hint}")
    assert orthanc and nginx and pg_plugin and python_plugin
    return Binaries(orthanc, nginx, Path(postgres_dirs[0]).parent, pg_plugin, python_plugin, prefix, env)


def _first(patterns: list[str]) -> str | None:
    for pattern in patterns:
        matches = sorted(glob.glob(pattern))
        if matches:
            return matches[0]
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def usable_port(port: int) -> int:
    if port == 0:
        return free_port()
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise ClusterError(
                f"port {port} is busy; choose another with --lb-port (0: any free port)"
            ) from None
    return port


def _render(template: str, values: dict[str, str]) -> str:
    text = (_TEMPLATES / template).read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def orthanc_configuration(
    *,
    name: str,
    http_port: int,
    dicom_port: int,
    root: Path,
    pg_port: int,
    service_url: str,
    plugin_secret: str,
    binaries: Binaries,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    index_dir = root / name / "index"
    index_dir.mkdir(parents=True, exist_ok=True)
    configuration: dict[str, Any] = {
        "Name": name,
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": name.upper().replace("-", "")[:16],
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(index_dir),
        # Every client is local (nginx, the job-service, the plugin): nobody reaches a server around nginx.
        "RemoteAccessAllowed": False,
        # Orthanc's DICOM server listens on every interface: off (C-STOREs from Orthanc still work);
        # --orthanc-config DicomServerEnabled=true to receive images.
        "DicomServerEnabled": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {DEMO_USER[0]: DEMO_USER[1]},
        "SaveJobs": False,
        "Plugins": [binaries.postgresql_index_plugin, binaries.python_plugin],
        "PythonScript": str(REPORTER_PATH),
        "PostgreSQL": {
            "EnableIndex": True,
            "EnableStorage": False,
            "Lock": False,
            "Host": "127.0.0.1",
            "Port": pg_port,
            "Database": "postgres",
            "Username": "postgres",
            "Password": "",
        },
        "OrthancJobs": {
            "Url": service_url,
            "Secret": plugin_secret,
            "ServerUrl": f"http://127.0.0.1:{http_port}",
            "HeartbeatInterval": 1,
        },
    }
    for key, value in overrides.items():
        # A section given in part (e.g. OrthancJobs={"QueueSize": 100}) changes only those keys.
        current = configuration.get(key)
        configuration[key] = (
            {**current, **value} if isinstance(current, dict) and isinstance(value, dict) else value
        )
    return configuration


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


def up(
    directory: Path,
    *,
    instances: int = 3,
    lb_port: int = 8042,
    orthanc_overrides: dict[str, Any] | None = None,
    service_settings: dict[str, str] | None = None,
    orthanc_root: Path | None = None,
    say: Any = print,
) -> ClusterState:
    """Start the whole cluster and wait until every Orthanc is registered with the job-service."""
    if instances < 1:
        raise ClusterError("--instances must be at least 1")
    binaries = find_binaries(orthanc_root)
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
    service_port = free_port()
    secret = secrets.token_urlsafe(24)
    state = ClusterState(
        directory=str(root),
        lb_url=f"http://127.0.0.1:{lb_port}",
        service_url=f"http://127.0.0.1:{service_port}",
        orthanc_urls={},
        secret=secret,
    )
    # The servers' ports are chosen first: the job-service is told which servers may register (the callers'
    # credentials go to them), and each server's plugin gets a secret of its own.
    ports = [free_port() for _ in range(instances)]
    settings = dict(service_settings or {})
    declared = [f"http://127.0.0.1:{port}" for port in ports]
    settings["allowed_server_urls"] = ",".join(
        [*declared, *filter(None, [settings.get("allowed_server_urls")])]
    )
    try:
        pg_port = _start_postgresql(state, root, binaries, say)
        _start_service(state, service_port, secret, settings, say)
        _start_orthancs(state, root, ports, pg_port, secret, binaries, orthanc_overrides or {}, say)
        _start_nginx(state, root, lb_port, service_port, binaries, say)
        _wait_registered(state, instances)
    except BaseException:
        say("start failed: stopping what was started")
        processes.stop(list(reversed(state.processes)))
        raise
    return state


def _start_postgresql(state: ClusterState, root: Path, binaries: Binaries, say: Any) -> int:
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
        processes.run(
            [
                str(binaries.postgres_bin / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
            user=user,
            log_path=log,
        )
    process = processes.spawn(
        "postgresql",
        "postgresql",
        [
            str(binaries.postgres_bin / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(socket_dir),
            "-c",
            "listen_addresses=127.0.0.1",
        ],
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


def _start_service(state: ClusterState, port: int, secret: str, settings: dict[str, str], say: Any) -> None:
    env = {"ORTHANC_JOBS_DATABASE": str(Path(state.directory) / "job-service.sqlite3")}
    env.update({f"ORTHANC_JOBS_{key.upper()}": value for key, value in settings.items()})
    env["ORTHANC_JOBS_SECRET"] = secret
    process = processes.spawn(
        "job-service",
        "job-service",
        [sys.executable, "-m", "orthanc_jobs", "serve", "--host", "127.0.0.1", "--port", str(port)],
        Path(state.directory) / "logs" / "job-service.log",
        env=env,
    )
    state.processes.append(process)
    state.save()
    _wait_until("the job-service", lambda: _http_ok(f"{state.service_url}/healthz"), 30, process)
    say(f"job-service ready on {state.service_url}")


def _start_orthancs(
    state: ClusterState,
    root: Path,
    ports: list[int],
    pg_port: int,
    secret: str,
    binaries: Binaries,
    overrides: dict[str, Any],
    say: Any,
) -> None:
    started = []
    for number, http_port in enumerate(ports, start=1):
        name = f"orthanc-{number}"
        configuration = orthanc_configuration(
            name=name,
            http_port=http_port,
            dicom_port=free_port(),
            root=root,
            pg_port=pg_port,
            service_url=state.service_url,
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
            _wait_orthanc(state, name, process)
    for name, process in started[1:]:
        _wait_orthanc(state, name, process)
    say(f"{len(ports)} Orthanc server(s) ready: " + ", ".join(state.orthanc_urls.values()))


def _wait_orthanc(state: ClusterState, name: str, process: OwnedProcess) -> None:
    url = state.orthanc_urls[name] + "/system"
    _wait_until(f"Orthanc {name}", lambda: _http_ok(url, DEMO_USER), 60, process)


def _start_nginx(
    state: ClusterState, root: Path, lb_port: int, service_port: int, binaries: Binaries, say: Any
) -> None:
    prefix = root / "nginx"
    for folder in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / "temp" / folder).mkdir(parents=True, exist_ok=True)
    upstreams = "\n".join(
        f"        server {url.removeprefix('http://')};" for url in state.orthanc_urls.values()
    )
    per_server = "\n".join(
        f"        location ^~ /{name}/ {{\n"
        f"            proxy_pass {url}/;\n"
        "            proxy_buffering off;\n"
        "        }"
        for name, url in state.orthanc_urls.items()
    )
    configuration = _render(
        "nginx.conf.template",
        {
            "user": "user root root;" if os.geteuid() == 0 else "",
            "prefix": str(prefix),
            "lb_port": str(lb_port),
            "service": f"127.0.0.1:{service_port}",
            "orthanc_servers": upstreams,
            "per_server_locations": per_server,
            "service_prefix": SERVICE_PREFIX,
        },
    )
    (prefix / "nginx.conf").write_text(configuration)
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


def _wait_registered(state: ClusterState, instances: int) -> None:
    def all_alive() -> bool:
        answer = httpx.get(f"{state.lb_url}{SERVICE_PREFIX}/servers", auth=DEMO_USER, timeout=2)
        alive = [s for s in answer.json() if s["Status"] == "alive"] if answer.status_code == 200 else []
        return len(alive) >= instances

    _wait_until("registration of every Orthanc with the job-service", all_alive, 30)


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


def _find_process(state: ClusterState, name: str) -> OwnedProcess:
    for process in state.processes:
        if process.name == name:
            return process
    names = ", ".join(p.name for p in state.processes)
    raise ClusterError(f"no process named {name!r} in this cluster (there are: {names})")


def stop_process(directory: Path, name: str) -> None:
    """Stop one process of the cluster (e.g. to see how the others cope)."""
    state = ClusterState.load(directory.resolve())
    processes.stop([_find_process(state, name)])


def start_process(directory: Path, name: str) -> OwnedProcess:
    """Start again one process of the cluster that was stopped (or killed), and wait until it is ready."""
    state = ClusterState.load(directory.resolve())
    process = _find_process(state, name)
    if process.is_running():
        raise ClusterError(f"{name} is running already (pid {process.pid})")
    started = processes.respawn(process)
    state.processes[state.processes.index(process)] = started
    state.save()
    if started.role == "orthanc":
        _wait_orthanc(state, name, started)
    elif started.role == "job-service":
        _wait_until("the job-service", lambda: _http_ok(f"{state.service_url}/healthz"), 30, started)
    return started


def describe(state: ClusterState) -> str:
    lines = [
        f"Load balancer (Orthanc API, user demo / password demo): {state.orthanc_lb_url}/",
        f"  Orthanc Explorer:       {state.orthanc_lb_url}/app/explorer.html",
        f"  Cluster jobs:           {state.orthanc_lb_url}/jobs?expand",
        f"  Dashboard:              {state.lb_url}{SERVICE_PREFIX}/ui/",
        f"  Servers of the cluster: {state.lb_url}{SERVICE_PREFIX}/servers",
        f"Job-service (direct):     {state.service_url}",
        f"  OpenAPI description:    {state.lb_url}{SERVICE_PREFIX}/openapi.json",
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

"""What the cluster's processes are given: Orthanc's configuration, nginx's, and PostgreSQL's command line."""

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from orthanc_jobs import SERVICE_PREFIX
from orthanc_jobs.api.browsers import DATA_POLICY, FIXED_HEADERS
from orthanc_jobs.cluster.binaries import Binaries

DEMO_USER = ("demo", "demo")
REPORTER_PATH = Path(__file__).parent.parent / "plugin" / "orthanc_jobs_reporter.py"
_TEMPLATES = Path(__file__).parent

# nginx's internal locations to each server, where the job-service sends it for a job's output.
OWNER_PREFIX = "/orthanc-jobs-owner/"
# What the job-service's answers carry (api/browsers.py), added by nginx to an output it fetched itself.
OUTPUT_SECURITY = (("Content-Security-Policy", DATA_POLICY), *FIXED_HEADERS)


def orthanc_configuration(
    *,
    name: str,
    http_port: int,
    dicom_port: int,
    root: Path,
    pg_port: int,
    service_urls: list[str],
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
        # Modalities and peers declared through the REST API (the job-service declares them on every
        # server) outlive a restart: Orthanc keeps them in the database, in rows of this server's own,
        # named by its DatabaseServerIdentifier (by default derived from its network addresses and ports).
        "DicomModalitiesInDatabase": True,
        "OrthancPeersInDatabase": True,
        "DatabaseServerIdentifier": name,
        "Plugins": binaries.plugins,
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
            # Every replica of the job-service, the plugin trying the next when one does not answer.
            "Url": service_urls[0] if len(service_urls) == 1 else service_urls,
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


def nginx_configuration(
    prefix: Path, lb_port: int, service_urls: list[str], orthanc_urls: dict[str, str]
) -> str:
    """nginx as the load balancer (nginx.conf.template): the job-service's replicas, round robin over the
    servers, and one location per server, each through a keep-alive upstream of its own."""
    per_server_upstreams = "\n".join(
        f"    upstream {_upstream_of(name)} {{\n"
        f"        server {_address(url)};\n"
        "        keepalive 16;\n"
        "    }"
        for name, url in orthanc_urls.items()
    )
    per_server_locations = "\n".join(
        f"        location ^~ /{name}/ {{\n"
        f"            proxy_pass http://{_upstream_of(name)}/;\n"
        "            proxy_buffering off;\n"
        "        }"
        for name in orthanc_urls
    )
    output_security = "\n".join(
        f'            add_header {header} "{value}" always;' for header, value in OUTPUT_SECURITY
    )
    owner_locations = "\n".join(
        f"        location ^~ {OWNER_PREFIX}{name}/ {{\n"
        "            internal;\n"
        f"            proxy_pass http://{_upstream_of(name)}/;\n"
        "            proxy_buffering off;\n"
        "            proxy_connect_timeout 2s;\n"
        "            proxy_read_timeout 15s;\n"
        "            error_page 502 504 = @owner_silent;\n"
        f"{output_security}\n"
        "        }"
        for name in orthanc_urls
    )
    values = {
        "user": "user root root;" if os.geteuid() == 0 else "",
        "owners": ", ".join(f"{url} {OWNER_PREFIX}{name}/" for name, url in orthanc_urls.items()),
        "owner_locations": owner_locations,
        "output_security": output_security,
        "prefix": str(prefix),
        "lb_port": str(lb_port),
        "job_service_replicas": _replica_servers(list(service_urls)),
        # Each replica tried once at most, and once more as a backup.
        "service_replicas": str(2 * len(service_urls) if len(service_urls) > 1 else 1),
        "orthanc_servers": _servers(orthanc_urls.values()),
        "per_server_upstreams": per_server_upstreams,
        "per_server_locations": per_server_locations,
        "service_prefix": SERVICE_PREFIX,
    }
    text = (_TEMPLATES / "nginx.conf.template").read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def _address(url: str) -> str:
    return url.removeprefix("http://")


def _servers(urls: Iterable[str], options: str = "") -> str:
    return "\n".join(f"        server {_address(url)}{options};" for url in urls)


def _replica_servers(urls: list[str]) -> str:
    """The job-service's replicas: one that fails (refused, reset, no answer within the read timeout: a hung
    process) is left aside for 5 s; the same replicas again as backups, used only once all are left aside
    (a rolling restart), so that nginx never answers 502 while a replica it left aside is back."""
    if len(urls) == 1:
        return _servers(urls)
    return _servers(urls, " max_fails=1 fail_timeout=5s") + "\n" + _servers(urls, " backup max_fails=0")


def _upstream_of(server_name: str) -> str:
    """The upstream of one server's own path (orthanc-2: orthanc_2)."""
    return server_name.replace("-", "_")


def initdb_command(binaries: Binaries, data: Path) -> list[str]:
    return [
        str(binaries.postgres_bin / "initdb"),
        "-D",
        str(data),
        "-U",
        "postgres",
        "-A",
        "trust",
        "--no-sync",
    ]


def postgres_command(binaries: Binaries, data: Path, port: int, socket_dir: Path) -> list[str]:
    return [
        str(binaries.postgres_bin / "postgres"),
        "-D",
        str(data),
        "-p",
        str(port),
        "-k",
        str(socket_dir),
        "-c",
        "listen_addresses=127.0.0.1",
    ]

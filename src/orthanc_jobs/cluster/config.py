"""What the cluster's processes are given: Orthanc's configuration, nginx's, and PostgreSQL's command line."""

import os
from pathlib import Path
from typing import Any

from orthanc_jobs import SERVICE_PREFIX
from orthanc_jobs.cluster.binaries import Binaries

DEMO_USER = ("demo", "demo")
REPORTER_PATH = Path(__file__).parent.parent / "plugin" / "orthanc_jobs_reporter.py"
_TEMPLATES = Path(__file__).parent


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


def nginx_configuration(prefix: Path, lb_port: int, service_port: int, orthanc_urls: dict[str, str]) -> str:
    """nginx as the load balancer (nginx.conf.template): round robin over the servers, one location per
    server, the job-service's routes."""
    upstreams = "\n".join(f"        server {url.removeprefix('http://')};" for url in orthanc_urls.values())
    per_server = "\n".join(
        f"        location ^~ /{name}/ {{\n"
        f"            proxy_pass {url}/;\n"
        "            proxy_buffering off;\n"
        "        }"
        for name, url in orthanc_urls.items()
    )
    values = {
        "user": "user root root;" if os.geteuid() == 0 else "",
        "prefix": str(prefix),
        "lb_port": str(lb_port),
        "service": f"127.0.0.1:{service_port}",
        "orthanc_servers": upstreams,
        "per_server_locations": per_server,
        "service_prefix": SERVICE_PREFIX,
    }
    text = (_TEMPLATES / "nginx.conf.template").read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


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

"""What the launcher writes for each process."""

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from orthanc_jobs import SERVICE_PREFIX
from orthanc_jobs.cluster.binaries import Binaries
from orthanc_jobs.cluster.config import nginx_configuration, orthanc_configuration

BINARIES = Binaries("/usr/sbin/Orthanc", "/usr/sbin/nginx", Path("/pg/bin"), "/p/pg.so", "/p/python.so")
ORTHANC_URLS = {"orthanc-1": "http://127.0.0.1:9001", "orthanc-2": "http://127.0.0.1:9002"}
REPLICA_URLS = ["http://127.0.0.1:8051", "http://127.0.0.1:8052", "http://127.0.0.1:8053"]
NEXT_UPSTREAM = "proxy_next_upstream error timeout http_502 http_503"


def _orthanc_configuration(root: Path, service_urls: list[str]) -> dict[str, Any]:
    return orthanc_configuration(
        name="orthanc-2",
        http_port=8043,
        dicom_port=4243,
        root=root,
        pg_port=5433,
        service_urls=service_urls,
        plugin_secret="s",
        binaries=BINARIES,
        overrides={"ConcurrentJobs": 1},
    )


def test_orthanc_configuration_shares_the_index_and_storage(tmp_path: Path) -> None:
    configuration = _orthanc_configuration(tmp_path, ["http://127.0.0.1:8050"])
    assert configuration["StorageDirectory"] == str(tmp_path / "storage")
    assert configuration["PostgreSQL"]["Lock"] is False
    assert configuration["PostgreSQL"]["Port"] == 5433
    assert configuration["SaveJobs"] is False
    assert configuration["ConcurrentJobs"] == 1
    assert configuration["OrthancJobs"]["ServerUrl"] == "http://127.0.0.1:8043"
    assert configuration["DicomAet"] == "ORTHANC2"
    assert Path(configuration["PythonScript"]).name == "orthanc_jobs_reporter.py"
    assert Path(configuration["PythonScript"]).exists()
    json.dumps(configuration)


def test_the_plugin_gets_one_url_or_the_list_of_every_replica(tmp_path: Path) -> None:
    one = _orthanc_configuration(tmp_path, ["http://127.0.0.1:8050"])
    assert one["OrthancJobs"]["Url"] == "http://127.0.0.1:8050"
    several = _orthanc_configuration(tmp_path, REPLICA_URLS)
    assert several["OrthancJobs"]["Url"] == REPLICA_URLS


# --- nginx --------------------------------------------------------------------------------------------


def _blocks(text: str, kind: str) -> dict[str, list[str]]:
    """The directives of each ``location`` or ``upstream`` block, by its argument(s) (not those whose body
    holds braces: the error pages' JSON)."""
    text = re.sub(r"#[^\n]*", "", text)
    found = {}
    for arguments, body in re.findall(rf"\b{kind}\s+([^{{;]+?)\s*\{{([^{{}}]*)\}}", text):
        found[" ".join(arguments.split())] = [" ".join(d.split()) for d in body.split(";") if d.strip()]
    return found


def _render(tmp_path: Path, service_urls: list[str]) -> str:
    return nginx_configuration(tmp_path, 8042, service_urls, ORTHANC_URLS)


def test_nginx_balances_the_servers_and_names_each(tmp_path: Path) -> None:
    text = _render(tmp_path, REPLICA_URLS[:1])

    assert "{{" not in text
    upstreams = _blocks(text, "upstream")
    assert upstreams["orthanc_servers"] == ["server 127.0.0.1:9001", "server 127.0.0.1:9002", "keepalive 32"]
    assert "listen 127.0.0.1:8042" in text and SERVICE_PREFIX in text


def test_each_servers_own_path_goes_through_a_keep_alive_upstream(tmp_path: Path) -> None:
    text = _render(tmp_path, REPLICA_URLS[:1])

    upstreams, locations = _blocks(text, "upstream"), _blocks(text, "location")
    for name, address in (("orthanc_1", "127.0.0.1:9001"), ("orthanc_2", "127.0.0.1:9002")):
        assert upstreams[name][0] == f"server {address}"
        assert any(line.startswith("keepalive ") for line in upstreams[name])
    assert locations["^~ /orthanc-2/"] == ["proxy_pass http://orthanc_2/", "proxy_buffering off"]
    # Keep-alive needs HTTP/1.1 and no "Connection: close", set once for every location.
    assert "proxy_http_version 1.1;" in text and 'proxy_set_header Connection "";' in text


@pytest.mark.parametrize("replicas", [1, 3])
def test_the_job_service_upstream_lists_every_replica(tmp_path: Path, replicas: int) -> None:
    text = _render(tmp_path, REPLICA_URLS[:replicas])

    addresses = [f"127.0.0.1:{8051 + number}" for number in range(replicas)]
    if replicas == 1:
        servers = [f"server {addresses[0]}"]
    else:
        # One that fails is left aside 5 s; the same again as backups, once all are left aside (a rolling
        # restart), else nginx would answer 502 while a replica it left aside is back.
        servers = [f"server {a} max_fails=1 fail_timeout=5s" for a in addresses]
        servers += [f"server {a} backup max_fails=0" for a in addresses]
    assert _blocks(text, "upstream")["job_service"] == [*servers, "keepalive 32"]


def test_the_job_routes_pass_a_failing_replica_over_but_never_send_a_post_twice(tmp_path: Path) -> None:
    text = _render(tmp_path, REPLICA_URLS)

    locations = _blocks(text, "location")
    job_service_routes = {
        key: lines for key, lines in locations.items() if "http://job_service" in str(lines)
    }
    assert set(job_service_routes) == {
        "= /orthanc/jobs",
        "^~ /orthanc/jobs/",
        "= /orthanc/queries",
        "^~ /orthanc/queries/",
        "= /orthanc/modalities",
        "^~ /orthanc/modalities/",
        "= /orthanc/peers",
        "^~ /orthanc/peers/",
        f"^~ {SERVICE_PREFIX}/",
        f"= {SERVICE_PREFIX}/events",
    }
    # Under a query, a modality or a peer, a request may be a synchronous retrieve or store, as long as its
    # transfer: never timed out to be passed on to another replica (the others are, after 15 s).
    transfers = ("^~ /orthanc/queries/", "^~ /orthanc/modalities/", "^~ /orthanc/peers/")
    for key in transfers:
        assert "proxy_next_upstream error http_502 http_503" in job_service_routes[key], key
        assert "proxy_read_timeout 1h" in job_service_routes[key], key
        assert "proxy_buffering off" in job_service_routes[key], key
    for key, lines in job_service_routes.items():
        assert NEXT_UPSTREAM in lines or key in transfers, key
        assert "proxy_next_upstream_tries 6" in lines, key  # each replica, and each again as a backup
        assert "proxy_connect_timeout 2s" in lines, key
        # Small bodies, but store-straight under a modality or a peer: a whole DICOM file.
        limit = "client_max_body_size 0" if key in transfers[1:] else "client_max_body_size 1m"
        assert limit in lines, key
    assert not any("non_idempotent" in line for lines in locations.values() for line in lines)
    # The Orthanc servers keep nginx's defaults.
    assert NEXT_UPSTREAM not in locations["^~ /orthanc/"]


def test_the_event_stream_has_a_location_of_its_own(tmp_path: Path) -> None:
    events = _blocks(_render(tmp_path, REPLICA_URLS), "location")[f"= {SERVICE_PREFIX}/events"]

    assert "proxy_pass http://job_service" in events
    assert "proxy_buffering off" in events
    assert "proxy_read_timeout 1h" in events


def test_nginx_keeps_its_error_pages_and_hides_the_internal_routes(tmp_path: Path) -> None:
    text = _render(tmp_path, REPLICA_URLS)

    locations = _blocks(text, "location")
    assert locations[f"^~ {SERVICE_PREFIX}/internal"] == ["return 404"]
    for page in ("error_page 413 = @body_too_large;", "error_page 494 = @header_too_large;"):
        assert page in text
    for named in ("location @body_too_large {", "location @header_too_large {"):
        assert named in text


@pytest.mark.parametrize("replicas", [1, 2])
def test_nginx_accepts_the_rendered_configuration(tmp_path: Path, replicas: int) -> None:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        pytest.skip("nginx is not installed")
    for folder in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / "temp" / folder).mkdir(parents=True)
    configuration = tmp_path / "nginx.conf"
    configuration.write_text(_render(tmp_path, REPLICA_URLS[:replicas]))

    command = [nginx, "-t", "-p", str(tmp_path), "-c", str(configuration), "-e", str(tmp_path / "error.log")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)

    assert result.returncode == 0, result.stderr

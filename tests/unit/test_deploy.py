"""The Docker deployment in deploy/: the compose file is valid and nginx routes like the local cluster.

Nothing is built or started: ``docker compose config`` (or ``docker-compose config``) validates the compose
file offline. The nginx configuration is checked as text, because ``nginx -t`` would have to resolve the
container names.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from orthanc_jobs import SERVICE_PREFIX
from orthanc_jobs.cluster.config import OUTPUT_SECURITY, OWNER_PREFIX

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
NGINX_CONF = DEPLOY / "nginx.conf"
NGINX_TEMPLATE = ROOT / "src" / "orthanc_jobs" / "cluster" / "nginx.conf.template"
REPORTER_SOURCE = ROOT / "src" / "orthanc_jobs" / "plugin" / "orthanc_jobs_reporter.py"
REPORTER_TARGET = "/scripts/orthanc_jobs_reporter.py"

ORTHANC_SERVICES = ("orthanc-1", "orthanc-2", "orthanc-3")
JOB_SERVICES = ("job-service-1", "job-service-2")
SERVICES = ("postgres", *ORTHANC_SERVICES, *JOB_SERVICES, "nginx")

LOCATION = re.compile(r"\blocation\s+(?:(=|\^~|~\*|~)\s+)?(\S+)\s*\{([^{}]*)\}")
UPSTREAM = re.compile(r"\bupstream\s+(\S+)\s*\{([^{}]*)\}")


# --- docker compose config ------------------------------------------------------------------------


def _compose_command() -> list[str] | None:
    """``docker compose`` (v2) if it works, else ``docker-compose`` (v1), else None."""
    docker = shutil.which("docker")
    if docker:
        try:
            probe = subprocess.run(
                [docker, "compose", "version"], capture_output=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            probe = None
        if probe is not None and probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def _run_config(environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is available")
    return subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
        env=environment,
    )


SECRETS = {"ORTHANC_JOBS_SECRET": "test", **{f"ORTHANC_{n}_SECRET": f"server-{n}" for n in (1, 2, 3)}}


def test_compose_config_is_valid_and_names_every_service() -> None:
    result = _run_config({**os.environ, **SECRETS})
    assert result.returncode == 0, f"compose config failed:\n{result.stdout}\n{result.stderr}"
    for service in SERVICES:
        assert re.search(rf"^\s+{re.escape(service)}:\s*$", result.stdout, re.MULTILINE), (
            f"service {service} missing from:\n{result.stdout}"
        )


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_config_requires_every_secret(missing: str) -> None:
    if (DEPLOY / ".env").exists():
        pytest.skip("deploy/.env exists and may set the secrets")
    environment = {**os.environ, **SECRETS}
    del environment[missing]
    result = _run_config(environment)
    assert result.returncode != 0
    assert missing in result.stdout + result.stderr
    assert "deploy/make-env.sh" in result.stdout + result.stderr


def test_make_env_writes_the_secrets_each_server_needs(tmp_path: Path) -> None:
    """The job-service's secret, and each server's own, as `orthanc-jobs server-secret` makes it."""
    from orthanc_jobs.core.model import plugin_secret_for

    env = tmp_path / ".env"
    subprocess.run([str(DEPLOY / "make-env.sh"), str(env)], check=True, capture_output=True)
    values = dict(line.split("=", 1) for line in env.read_text().split())
    assert set(values) == set(SECRETS)
    assert len(values["ORTHANC_JOBS_SECRET"]) >= 32
    for n in (1, 2, 3):
        assert values[f"ORTHANC_{n}_SECRET"] == plugin_secret_for(
            values["ORTHANC_JOBS_SECRET"], f"http://orthanc-{n}:8042"
        )
    assert oct(env.stat().st_mode & 0o777) == "0o600"
    again = subprocess.run(
        [str(DEPLOY / "make-env.sh"), str(env)], check=True, capture_output=True, text=True
    )
    assert "left as it is" in again.stderr
    assert dict(line.split("=", 1) for line in env.read_text().split()) == values


# --- nginx.conf, as text ---------------------------------------------------------------------------


def _without_comments(text: str) -> str:
    return re.sub(r"#[^\n]*", "", text)


def _directives(body: str) -> list[str]:
    return [" ".join(part.split()) for part in body.split(";") if part.strip()]


def _locations(text: str) -> dict[tuple[str, str], list[str]]:
    return {
        (modifier, path): _directives(body)
        for modifier, path, body in LOCATION.findall(_without_comments(text))
    }


def _upstreams(text: str) -> dict[str, list[str]]:
    return {name: _directives(body) for name, body in UPSTREAM.findall(_without_comments(text))}


def _route(locations: dict[tuple[str, str], list[str]], uri: str) -> list[str]:
    """The directives of the location nginx picks for uri (exact match, else longest prefix).

    Exact without regular expressions: the test on the configuration checks that it has none.
    """
    if ("=", uri) in locations:
        return locations[("=", uri)]
    prefixes = [(path, body) for (modifier, path), body in locations.items() if modifier in ("", "^~")]
    matching = [(path, body) for path, body in prefixes if uri.startswith(path)]
    assert matching, f"no location for {uri}"
    return max(matching, key=lambda item: len(item[0]))[1]


@pytest.fixture(scope="module")
def nginx_conf() -> str:
    return NGINX_CONF.read_text()


def test_nginx_has_no_regex_location(nginx_conf: str) -> None:
    modifiers = {modifier for modifier, _ in _locations(nginx_conf)}
    assert modifiers <= {"", "=", "^~"}


def test_nginx_blocks_the_internal_api(nginx_conf: str) -> None:
    locations = _locations(nginx_conf)
    assert locations[("^~", f"{SERVICE_PREFIX}/internal")] == ["return 404"]
    for uri in (
        f"{SERVICE_PREFIX}/internal",
        f"{SERVICE_PREFIX}/internal/register",
        f"{SERVICE_PREFIX}/internal/heartbeat",
        f"{SERVICE_PREFIX}/internal/events",
    ):
        assert _route(locations, uri) == ["return 404"], uri


def test_nginx_sends_the_jobs_routes_to_the_job_service(nginx_conf: str) -> None:
    locations = _locations(nginx_conf)
    listing = _route(locations, "/orthanc/jobs")
    assert "proxy_pass http://job_service/jobs" in listing
    job = _route(locations, "/orthanc/jobs/0f1e2d3c-job")
    assert "proxy_pass http://job_service/jobs/" in job
    assert "proxy_buffering off" in job
    # The jobs routes take small bodies only; nginx refuses larger ones itself, in Orthanc's JSON shape.
    for route in (listing, job, _route(locations, f"{SERVICE_PREFIX}/servers")):
        assert "client_max_body_size 1m" in route
    assert "error_page 413 = @body_too_large" in _directives(_without_comments(nginx_conf))
    assert "proxy_pass http://job_service" in _route(locations, f"{SERVICE_PREFIX}/servers")
    upstream = _upstreams(nginx_conf)["job_service"]
    assert [line for line in upstream if line.startswith("server ")] == [
        *(f"server {name}:8050 max_fails=1 fail_timeout=5s" for name in JOB_SERVICES),
        *(f"server {name}:8050 backup max_fails=0" for name in JOB_SERVICES),
    ]
    # A replica that fails is passed over, each tried once; a POST already sent is never sent again.
    for uri in (
        "/orthanc/jobs",
        "/orthanc/jobs/0f1e2d3c-job",
        f"{SERVICE_PREFIX}/servers",
        f"{SERVICE_PREFIX}/events",
    ):
        route = _route(locations, uri)
        assert "proxy_next_upstream error timeout http_502 http_503" in route, uri
        assert f"proxy_next_upstream_tries {2 * len(JOB_SERVICES)}" in route, uri
    assert "non_idempotent" not in _without_comments(nginx_conf)


def test_nginx_sends_the_queries_routes_to_the_job_service(nginx_conf: str) -> None:
    locations = _locations(nginx_conf)
    assert "proxy_pass http://job_service/queries" in _route(locations, "/orthanc/queries")
    handle = _route(locations, "/orthanc/queries/0f1e2d3c-query/answers")
    assert "proxy_pass http://job_service/queries/" in handle
    assert "proxy_read_timeout 1h" in handle and "proxy_buffering off" in handle
    # Modalities and peers, and what runs under them (a query), go to the job-service too.
    for uri, target in (
        ("/orthanc/modalities", "modalities"),
        ("/orthanc/modalities/pacs/query", "modalities/"),
        ("/orthanc/peers", "peers"),
        ("/orthanc/peers/other/store", "peers/"),
    ):
        assert f"proxy_pass http://job_service/{target}" in _route(locations, uri), uri


def test_nginx_balances_the_rest_over_the_three_orthanc(nginx_conf: str) -> None:
    locations = _locations(nginx_conf)
    assert "proxy_pass http://orthanc_servers/" in _route(locations, "/orthanc/instances")
    upstream = _upstreams(nginx_conf)["orthanc_servers"]
    assert [line for line in upstream if line.startswith("server ")] == [
        f"server {name}:8042" for name in ORTHANC_SERVICES
    ]
    assert any(line.startswith("keepalive ") for line in upstream)
    for name in ORTHANC_SERVICES:
        assert _route(locations, f"/{name}/system") == [
            f"proxy_pass http://{name}:8042/",
            "proxy_buffering off",
        ]
    text = " ".join(_directives(_without_comments(nginx_conf)))
    for directive in ("client_max_body_size 0", "proxy_http_version 1.1", 'proxy_set_header Connection ""'):
        assert directive in text


def test_nginx_routes_like_the_local_cluster(nginx_conf: str) -> None:
    """Every location of the local cluster's template exists here with the same directives."""
    template = NGINX_TEMPLATE.read_text().replace("{{service_prefix}}", SERVICE_PREFIX)
    template = template.replace("{{service_replicas}}", str(2 * len(JOB_SERVICES)))
    owners = ", ".join(f"http://{name}:8042 {OWNER_PREFIX}{name}/" for name in ORTHANC_SERVICES)
    template = template.replace("{{owners}}", owners)
    security = "".join(f'add_header {header} "{value}" always;' for header, value in OUTPUT_SECURITY)
    template = template.replace("{{output_security}}", security)
    expected = _locations(template)
    assert expected, "no location found in the template"
    actual = _locations(nginx_conf)
    for key, directives in expected.items():
        assert actual.get(key) == directives, f"location {key}"


# --- docker-compose.yml ---------------------------------------------------------------------------


def test_compose_commits_no_secret_and_gives_each_server_its_own() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed: the compose file is not parsed")
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    for replica in JOB_SERVICES:
        environment = _environment(services[replica])
        assert environment["ORTHANC_JOBS_SECRET"].startswith("${ORTHANC_JOBS_SECRET:?")
        declared = environment["ORTHANC_JOBS_ALLOWED_SERVER_URLS"].split(",")
        assert declared == [f"http://{name}:8042" for name in ORTHANC_SERVICES]
        assert environment["ORTHANC_JOBS_REPLICA_NAME"] == replica
        assert environment["ORTHANC_JOBS_DATABASE"].startswith("postgresql://")
    for number, name in enumerate(ORTHANC_SERVICES, start=1):
        assert _environment(services[name])["ORTHANC_JOBS_SECRET"].startswith(f"${{ORTHANC_{number}_SECRET:?")


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    return {key: str(value) for key, value in environment.items()}


def _mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read-only) of every volume, short or long syntax."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            mounts.append((volume["source"], volume["target"], bool(volume.get("read_only"))))
        else:
            source, _, rest = volume.partition(":")
            target, _, mode = rest.partition(":")
            mounts.append((source, target, "ro" in mode.split(",")))
    return mounts


def test_compose_orthanc_services_save_no_jobs_and_load_the_reporter() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed: the compose file is not parsed")
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    for name in ORTHANC_SERVICES:
        service = services[name]
        environment = _environment(service)
        assert environment["ORTHANC__SAVE_JOBS"].lower() == "false", name
        assert environment["ORTHANC__POSTGRESQL__LOCK"].lower() == "false", name
        assert environment["ORTHANC__PYTHON_SCRIPT"] == REPORTER_TARGET, name
        assert environment["ORTHANC_JOBS_SERVER_URL"] == f"http://{name}:8042", name
        assert environment["ORTHANC_JOBS_URL"].split(",") == [f"http://{s}:8050" for s in JOB_SERVICES], name
        reporter = [mount for mount in _mounts(service) if mount[1] == REPORTER_TARGET]
        assert len(reporter) == 1, name
        source, _, read_only = reporter[0]
        assert (DEPLOY / source).resolve() == REPORTER_SOURCE, name
        assert read_only, name


def test_nginx_fetches_outputs_from_their_owner_in_internal_locations(nginx_conf: str) -> None:
    """The job-service sends nginx to the owner of an output (X-Accel-Redirect): an internal location per
    server, to that server, with the headers of the job-service's answers; the map sent with each jobs
    request names every server at the URL its plugin registers."""
    locations = _locations(nginx_conf)
    for name in ORTHANC_SERVICES:
        owner = _route(locations, f"{OWNER_PREFIX}{name}/jobs/0f1e2d3c-job/archive")
        assert owner[:2] == ["internal", f"proxy_pass http://{name}:8042/"], name
        assert "error_page 502 504 = @owner_silent" in owner
        for header, value in OUTPUT_SECURITY:  # (a policy holds ";": the directives are joined again)
            assert f'add_header {header} "{value}" always' in "; ".join(owner)
    job = _route(locations, "/orthanc/jobs/0f1e2d3c-job/archive")
    owners = ", ".join(f"http://{name}:8042 {OWNER_PREFIX}{name}/" for name in ORTHANC_SERVICES)
    assert f'proxy_set_header X-Orthanc-Jobs-Owners "{owners}"' in job
    # Setting a header in a location drops those set for the whole server: they are set again.
    assert "proxy_set_header Host $http_host" in job and 'proxy_set_header Connection ""' in job


def test_compose_monitoring_is_a_profile_that_scrapes_every_replica() -> None:
    """Prometheus and Grafana start only with `--profile monitoring`; Prometheus reads every replica."""
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed: the compose file is not parsed")
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"], name
        for source, _, read_only in _mounts(services[name]):
            if source.startswith("."):
                assert (DEPLOY / source).exists() and read_only, (name, source)
    for name in SERVICES:
        assert "profiles" not in services[name], name
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "orthanc-jobs"
    assert [target for static in job["static_configs"] for target in static["targets"]] == [
        f"{name}:8050" for name in JOB_SERVICES
    ]

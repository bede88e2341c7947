"""Credentials, the shared secret and bad input: 4xx JSON answers, no 5xx, nothing forwarded unchecked."""

import json
import subprocess
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from orthanc_jobs.cluster.launcher import DEMO_USER, ClusterState
from orthanc_jobs.core.model import plugin_secret_for
from tests.e2e.helpers import (
    SilentModality,
    create_async_job,
    create_study,
    direct,
    plugin_headers,
    wait_job_state,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def finished_job(lb: httpx.Client) -> str:
    study, _ = create_study(lb, "SECURITY")
    job_id = create_async_job(lb, "archive", study)
    wait_job_state(lb, job_id, {"Success"})
    return job_id


def _public_requests(job_id: str) -> list[tuple[str, str]]:
    return [
        ("GET", "/orthanc/jobs"),
        ("GET", "/orthanc/jobs?expand"),
        ("GET", f"/orthanc/jobs/{job_id}"),
        ("GET", f"/orthanc/jobs/{job_id}/archive"),
        ("POST", f"/orthanc/jobs/{job_id}/pause"),
        ("POST", f"/orthanc/jobs/{job_id}/cancel"),
        ("DELETE", f"/orthanc/jobs/{job_id}"),
        ("GET", "/orthanc-jobs/servers"),
        ("GET", "/orthanc-jobs/"),
    ]


@pytest.mark.parametrize(
    "auth", [None, ("demo", "wrong"), ("intruder", "demo")], ids=["none", "bad-pw", "bad-user"]
)
def test_public_routes_need_the_cluster_credentials(
    cluster: ClusterState, finished_job: str, auth: tuple[str, str] | None
) -> None:
    with httpx.Client(base_url=cluster.lb_url, auth=auth, timeout=30) as anonymous:
        for method, path in _public_requests(finished_job):
            answer = anonymous.request(method, path)
            assert answer.status_code == 401, (method, path, answer.status_code)
            assert answer.json()["HttpStatus"] == 401
            assert "CreationTime" not in answer.text  # no job data


def test_a_bearer_token_orthanc_refuses_is_refused(cluster: ClusterState) -> None:
    headers = {"Authorization": f"Bearer {uuid.uuid4()}"}
    assert httpx.get(f"{cluster.orthanc_lb_url}/jobs", headers=headers).status_code == 401


def test_the_internal_api_is_not_exposed_by_the_load_balancer(cluster: ClusterState) -> None:
    headers = plugin_headers(cluster, "orthanc-1")  # even with a plugin's secret
    for route in ("register", "heartbeat", "events"):
        answer = httpx.post(f"{cluster.lb_url}/orthanc-jobs/internal/{route}", json={}, headers=headers)
        assert answer.status_code == 404


def test_the_internal_api_needs_the_servers_own_secret(cluster: ClusterState) -> None:
    url = f"{cluster.service_url}/orthanc-jobs/internal"
    servers = httpx.get(f"{cluster.lb_url}/orthanc-jobs/servers", auth=DEMO_USER).json()
    first = next(s for s in servers if s["Name"] == "orthanc-1")
    registration = {"Name": "forged", "Url": first["Url"], "Incarnation": "forged-1", "Token": "Bearer x"}
    stop = {"Incarnation": first["Incarnation"], "Events": [{"Type": "ORTHANC_STOPPED"}]}
    own = plugin_headers(cluster, "orthanc-1")
    for route, body in [
        ("register", registration),
        ("heartbeat", {"Incarnation": first["Incarnation"]}),
        ("events", stop),
    ]:
        assert httpx.post(f"{url}/{route}", json=body).status_code == 401
        # A wrong secret; the job-service's own, which no plugin needs; another server's (leaked from
        # orthanc-2); orthanc-1's secret without saying whose it is.
        for forged in (
            {**own, "Authorization": "Bearer not-the-secret"},
            {**own, "Authorization": f"Bearer {cluster.secret}"},
            {**plugin_headers(cluster, "orthanc-2"), "X-Orthanc-Jobs-Server": first["Url"]},
            {"Authorization": own["Authorization"]},
        ):
            wrong = httpx.post(f"{url}/{route}", json=body, headers=forged)
            assert wrong.status_code == 403, (route, forged)
            assert wrong.json()["HttpStatus"] == 403
        # orthanc-2's own secret, speaking as orthanc-2, for orthanc-1's incarnation: refused as well.
        if route != "register":
            assert (
                httpx.post(
                    f"{url}/{route}", json=body, headers=plugin_headers(cluster, "orthanc-2")
                ).status_code
                == 403
            )
    after = httpx.get(f"{cluster.lb_url}/orthanc-jobs/servers", auth=DEMO_USER).json()
    assert [(s["Incarnation"], s["Status"]) for s in after] == [
        (s["Incarnation"], s["Status"]) for s in servers
    ]


def test_forged_plugin_payloads_are_refused(
    cluster: ClusterState, lb: httpx.Client, finished_job: str
) -> None:
    url = f"{cluster.service_url}/orthanc-jobs/internal"
    owner = lb.get(f"/jobs/{finished_job}").json()["Server"]
    headers = plugin_headers(cluster, owner["Name"])
    known = httpx.get(f"{cluster.lb_url}/orthanc-jobs/servers", auth=("demo", "demo")).json()
    incarnation = next(s["Incarnation"] for s in known if s["Name"] == owner["Name"])
    job = lb.get(f"/jobs/{finished_job}").json()
    other_id = str(uuid.uuid4())
    unknown = json.dumps({"Incarnation": "unknown-incarnation", "Events": []}).encode()
    forged_batches = [b"not json", unknown, b"[1, 2]"]
    for body in forged_batches:
        answer = httpx.post(f"{url}/events", content=body, headers=headers)
        assert 400 <= answer.status_code < 500, (body, answer.status_code)
        assert answer.json()["HttpStatus"] == answer.status_code
    # Each event is judged on its own: refused with a reason, nothing changes, the batch is answered.
    forged_events = [
        {"Type": "JOB_SUCCESS", "JobId": other_id, "Job": dict(job, State="Failure")},
        {"Type": "JOB_EXPLODED", "JobId": finished_job},
        {"Type": "JOB_SUCCESS", "JobId": "../../patients"},
        {"Type": "JOB_FAILURE", "JobId": finished_job, "Job": dict(job, State="Exploded")},
    ]
    batch = {"Incarnation": incarnation, "Events": forged_events}
    answer = httpx.post(f"{url}/events", json=batch, headers=headers)
    assert answer.status_code == 200
    assert answer.json()["Accepted"] == 0
    assert [refused["Index"] for refused in answer.json()["Refused"]] == [0, 1, 2, 3]
    assert lb.get(f"/jobs/{finished_job}").json()["State"] == "Success"
    assert lb.get(f"/jobs/{other_id}").status_code == 404

    too_big = b'{"Incarnation": "x", "Events": [' + b" " * (17 * 1024 * 1024) + b"]}"
    assert httpx.post(f"{url}/events", content=too_big, headers=headers).status_code == 413


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/orthanc/jobs/not-a-job", 404),
        ("GET", "/orthanc/jobs/" + "f" * 300, 404),
        ("GET", f"/orthanc/jobs/{uuid.uuid4()}", 404),
        ("POST", f"/orthanc/jobs/{uuid.uuid4()}/pause", 404),
        ("GET", "/orthanc/jobs?status=Exploded", 400),
        ("GET", "/orthanc/jobs?limit=-1", 400),
        ("GET", "/orthanc/jobs?limit=abc", 400),
        ("GET", "/orthanc/jobs?offset=-5", 400),
        # nginx resolves these itself, to paths outside the API: its own 404.
        ("GET", "/orthanc/jobs/..%2f..%2fpatients", None),
        ("GET", "/orthanc/jobs/%2e%2e/%2e%2e/patients", None),
    ],
)
def test_bad_input_gets_a_clear_4xx(
    lb: httpx.Client, cluster: ClusterState, method: str, path: str, expected: int | None
) -> None:
    answer = httpx.request(method, cluster.lb_url + path, auth=("demo", "demo"))
    assert 400 <= answer.status_code < 500, answer.status_code
    if expected is not None:
        assert answer.status_code == expected
        assert answer.json()["HttpStatus"] == expected
    assert '"PatientName"' not in answer.text and "ParentStudy" not in answer.text


def test_unknown_actions_and_keys(lb: httpx.Client, finished_job: str) -> None:
    unknown_action = lb.post(f"/jobs/{finished_job}/explode")
    assert unknown_action.status_code == 405
    assert unknown_action.json()["HttpStatus"] == 405
    unknown_key = lb.get(f"/jobs/{finished_job}/no-such-output")
    assert unknown_key.status_code == 404
    assert unknown_key.json()["HttpStatus"] == 404
    bad_key = lb.get(f"/jobs/{finished_job}/archive.zip")
    assert bad_key.status_code == 400
    assert bad_key.json()["HttpStatus"] == 400
    assert lb.get(f"/jobs/{finished_job}").json()["State"] == "Success"


@pytest.mark.parametrize(
    "path",
    [
        "/jobs/..%2f..%2fpatients",
        "/jobs/%2e%2e%2fpatients",
        "/jobs/..%2F..%2Fpatients/archive",
        "/jobs/x%00y",
        "/jobs/" + "%2e" * 10,
    ],
)
def test_the_job_service_itself_never_forwards_a_traversal(cluster: ClusterState, path: str) -> None:
    """Straight to the job-service (no nginx to normalise the path): refused before anything is sent."""
    answer = httpx.get(cluster.service_url + path, auth=("demo", "demo"))
    assert answer.status_code == 404
    assert answer.json()["HttpStatus"] == 404


def _other_host_address() -> str | None:
    """An address of this machine that is not loopback: how another host would reach it."""
    found = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True
    )
    for line in found.stdout.splitlines():
        parts = line.split()
        if "inet" in parts:
            return parts[parts.index("inet") + 1].split("/")[0]
    return None


def test_nothing_of_the_local_cluster_answers_another_host(cluster: ClusterState) -> None:
    """Orthanc answers only local clients (nginx, the job-service, the plugins), its DICOM server is off,
    and the job-service, nginx and PostgreSQL listen on loopback only."""
    address = _other_host_address()
    if address is None:
        pytest.skip("this machine has no address but loopback: no other host can reach it")
    state = ClusterState.load(Path(cluster.directory))
    for url in state.orthanc_urls.values():
        port = int(url.rsplit(":", 1)[1])
        around_nginx = httpx.get(f"http://{address}:{port}/system", auth=DEMO_USER, timeout=5)
        assert around_nginx.status_code in (401, 403), around_nginx.text
        assert httpx.get(f"{url}/system", auth=DEMO_USER, timeout=5).status_code == 200
    listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout.splitlines()

    def exposed(role: str) -> list[str]:
        pids = {p.pid for p in state.processes if p.role == role}
        return [
            line
            for line in listening
            if any(f"pid={pid}," in line for pid in pids) and not line.split()[3].startswith("127.0.0.1:")
        ]

    assert exposed("job-service") == exposed("nginx") == exposed("postgresql") == []
    # Orthanc's HTTP server cannot be bound to loopback (it answers 401 from elsewhere, as above).
    assert len(exposed("orthanc")) == len(state.orthanc_urls), exposed("orthanc")


def test_an_oversized_authorization_header_is_refused_without_asking_orthanc(cluster: ClusterState) -> None:
    """100 KB of Authorization straight to the job-service: before, every Orthanc was asked, and 503."""
    huge = "Basic " + "A" * 100_000
    answer = httpx.get(f"{cluster.service_url}/jobs", headers={"Authorization": huge}, timeout=10)
    assert answer.status_code == 431
    assert answer.json()["HttpStatus"] == 431
    # Through nginx, its own limit answers first, in the same JSON shape (before: nginx's HTML page, 400).
    for size in (9_000, 100_000):
        answer = httpx.get(f"{cluster.lb_url}/orthanc/jobs", headers={"Authorization": "Basic " + "A" * size})
        assert answer.status_code == 431, answer.text
        assert answer.json()["HttpStatus"] == 431 and answer.json()["OrthancStatus"] == 8


def test_a_body_over_the_jobs_routes_limit_is_refused_by_the_load_balancer(
    cluster: ClusterState, finished_job: str
) -> None:
    """Before: 17 MB to a jobs route through nginx was a 502 (the service refused it while nginx sent)."""
    answer = httpx.post(
        f"{cluster.orthanc_lb_url}/jobs/{finished_job}/pause",
        content=b"x" * (2 * 1024 * 1024),
        auth=DEMO_USER,
    )
    assert answer.status_code == 413, answer.text
    assert answer.json()["HttpStatus"] == 413
    small = httpx.post(f"{cluster.orthanc_lb_url}/jobs/{finished_job}/pause", content=b"{}", auth=DEMO_USER)
    assert small.status_code != 413


def test_a_refusal_without_credentials_says_they_are_needed(cluster: ClusterState) -> None:
    assert "need credentials" in httpx.get(f"{cluster.orthanc_lb_url}/jobs").json()["Message"]
    wrong = httpx.get(f"{cluster.orthanc_lb_url}/jobs", auth=("demo", "wrong")).json()["Message"]
    assert "refuse these credentials" in wrong


def test_statistics_are_bounded(cluster: ClusterState) -> None:
    url = f"{cluster.lb_url}/orthanc-jobs/stats"
    too_many = httpx.get(url, params={"bucket": 10, "window": 604800}, auth=DEMO_USER)
    assert too_many.status_code == 400  # 60,480 buckets: before, 752 ms to answer, with 3 jobs
    assert "at most 1000" in too_many.json()["Message"]
    week = httpx.get(url, params={"bucket": 3600, "window": 604800}, auth=DEMO_USER)
    assert week.status_code == 200
    assert all(len(series) <= 169 for series in week.json()["Servers"].values())


@pytest.mark.parametrize("path", ["/orthanc-jobs/nope", "/orthanc-jobs/servers/x/y", "/orthanc/jobs/a/b/c"])
def test_unknown_routes_ask_for_credentials_first_as_orthanc_does(cluster: ClusterState, path: str) -> None:
    assert httpx.get(f"{cluster.lb_url}{path}").status_code == 401
    assert httpx.get(f"{cluster.lb_url}{path}", auth=("demo", "wrong")).status_code == 401
    found = httpx.get(f"{cluster.lb_url}{path}", auth=DEMO_USER)
    assert found.status_code == 404
    assert found.json()["HttpStatus"] == 404


def test_a_form_on_another_site_cannot_cancel_a_job(
    cluster: ClusterState, servers: dict[str, httpx.Client]
) -> None:
    """A page of another site, in a browser logged in to the dashboard, posts a plain form to cancel a job:
    a single Orthanc would cancel it; the cluster refuses (403), and the job runs on."""
    with direct(cluster, "orthanc-2") as client:
        study, _ = create_study(client, "CSRF")
        modality = SilentModality()
        try:
            job_id = modality.store(client, study)
            url = f"{cluster.lb_url}/orthanc/jobs/{job_id}/cancel"
            form = {"Content-Type": "application/x-www-form-urlencoded"}
            from_elsewhere = [
                {
                    "Origin": "http://attacker.example",
                    "Sec-Fetch-Site": "cross-site",
                    "Sec-Fetch-Mode": "navigate",
                },
                {"Origin": "http://attacker.example"},  # a browser without Sec-Fetch-Site
            ]
            for headers in from_elsewhere:
                answer = httpx.post(url, headers={**form, **headers}, content=b"", auth=DEMO_USER)
                assert answer.status_code == 403, answer.text
                assert client.get(f"/jobs/{job_id}").json()["State"] == "Running"
            # The dashboard (same origin) and scripts (no Origin) still act.
            same_origin = {"Origin": cluster.lb_url, "Sec-Fetch-Site": "same-origin"}
            assert httpx.post(url, headers=same_origin, auth=DEMO_USER).json() == {}
        finally:
            modality.close()  # a cancel of a running C-STORE takes effect once its association ends
        wait_job_state(client, job_id, {"Failure"})


def test_the_dashboard_and_the_api_forbid_framing_and_foreign_content(cluster: ClusterState) -> None:
    page = httpx.get(f"{cluster.lb_url}/orthanc-jobs/ui/", auth=DEMO_USER)
    api = httpx.get(f"{cluster.lb_url}/orthanc/jobs", auth=DEMO_USER)
    for answer in (page, api):
        assert answer.status_code == 200
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
    assert "default-src 'none'; script-src 'self'" in page.headers["Content-Security-Policy"]


class AcceptsAnything:
    """A fake Orthanc that lets every caller in: what a thief of credentials would register."""

    def __init__(self) -> None:
        self.authorizations: list[str | None] = []
        seen = self.authorizations

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.headers.get("Authorization"))
                body = b"[]" if self.path.startswith("/jobs") else b'{"Version": "1.12.7"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_only_declared_servers_register_so_credentials_go_nowhere_else(cluster: ClusterState) -> None:
    """Even with secrets made from the job-service's own (the worst leak), a server the operator did not
    declare, or a look-alike of one, cannot register: no caller's password is ever sent there. Before, 5 of
    20 wrong passwords got in through such a server."""
    fake = AcceptsAnything()
    declared = cluster.orthanc_urls["orthanc-1"]
    try:
        for url in (
            fake.url,
            f"{declared}.attacker.example",
            declared.replace("http://", "http://user@"),
            f"{declared}@127.0.0.1:18999",
            f"{declared}9",
        ):
            try:
                secret = plugin_secret_for(cluster.secret, url)
            except ValueError:
                secret = "anything"
            headers = {"Authorization": f"Bearer {secret}", "X-Orthanc-Jobs-Server": url}
            registration = {"Name": "thief", "Url": url, "Incarnation": f"thief-{uuid.uuid4()}", "Token": "x"}
            answer = httpx.post(
                f"{cluster.service_url}/orthanc-jobs/internal/register", json=registration, headers=headers
            )
            assert answer.status_code == 403, (url, answer.text)
        servers = httpx.get(f"{cluster.lb_url}/orthanc-jobs/servers", auth=DEMO_USER).json()
        assert sorted(s["Url"] for s in servers) == sorted(cluster.orthanc_urls.values())
        for attempt in range(20):
            wrong = httpx.get(f"{cluster.lb_url}/orthanc/jobs", auth=("demo", f"wrong-{attempt}"))
            assert wrong.status_code == 401
        assert fake.authorizations == []  # never asked anything
    finally:
        fake.close()

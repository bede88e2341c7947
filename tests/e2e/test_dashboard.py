"""The dashboard (issues #5 and #15) and Orthanc Explorer, in real headless Chromium against the real local
cluster.

Chromium is Debian's (scripts/install-system-deps.sh installs it), driven by Playwright; screenshots go to
tests/artifacts/, and with SAVE_SCREENSHOTS=1 the README's go to docs/screenshots/.
"""

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Dialog, Locator, Page, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from orthanc_jobs.cluster.launcher import DEMO_USER, ClusterState
from tests.e2e.conftest import ORTHANC_CONFIG, running_cluster
from tests.e2e.helpers import (
    SilentModality,
    create_async_job,
    create_study,
    free_port,
    wait_for,
    wait_job_state,
)
from tests.e2e.test_job_actions import blocked

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("ORTHANC_JOBS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPOSITORY = Path(__file__).resolve().parents[2]
ARTIFACTS = REPOSITORY / "tests" / "artifacts"
README_SCREENSHOTS = REPOSITORY / "docs" / "screenshots"
VIEWPORT = {"width": 1280, "height": 800}
# Every wait of the browser is bounded by this (milliseconds); the API waits by helpers' timeouts.
BROWSER_TIMEOUT_MS = 15_000
LIVE_TIMEOUT_MS = 10_000
SAVE_SCREENSHOTS = os.environ.get("SAVE_SCREENSHOTS") == "1"
# The dashboard's own cluster flags a running job stuck after this many seconds without progress.
STUCK_AFTER = 3


def screenshot(page: Page, name: str, full_page: bool = False) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def save_for_readme(shot: Page | Locator, name: str) -> None:
    """A picture of the page or of one of its parts in tests/artifacts/, and with SAVE_SCREENSHOTS=1 in
    docs/screenshots/ for the README."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    if SAVE_SCREENSHOTS:
        README_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot.screenshot(path=str(README_SCREENSHOTS / f"{name}.png"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: run scripts/install-system-deps.sh (Debian package chromium)"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    user, password = DEMO_USER
    opened = browser.new_context(http_credentials={"username": user, "password": password}, viewport=VIEWPORT)
    opened.set_default_timeout(BROWSER_TIMEOUT_MS)
    opened.set_default_navigation_timeout(BROWSER_TIMEOUT_MS)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    """A page whose script errors, and whatever its Content-Security-Policy blocks, fail the test."""
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on(
        "console",
        lambda message: errors.append(message.text) if "Content Security Policy" in message.text else None,
    )
    yield opened
    assert not errors, f"errors in the page's scripts: {errors}"


@pytest.fixture(scope="module")
def dashboard_url(cluster: ClusterState) -> str:
    return f"{cluster.lb_url}/orthanc-jobs/ui/"


@pytest.fixture(scope="module")
def jobs_service(cluster: ClusterState) -> Iterator[httpx.Client]:
    """The job-service's own routes, through the load balancer."""
    with httpx.Client(base_url=f"{cluster.lb_url}/orthanc-jobs", auth=DEMO_USER, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def jobs_by_server(lb: httpx.Client, servers: dict[str, httpx.Client]) -> dict[str, str]:
    """A finished asynchronous archive job on every server (created through the load balancer)."""
    study, _ = create_study(lb, "DASHBOARD")
    owned: dict[str, str] = {}
    for _ in range(10 * len(servers)):
        job_id = create_async_job(lb, "archive", study)
        owned.setdefault(lb.get(f"/jobs/{job_id}").json()["Server"]["Name"], job_id)
        if len(owned) == len(servers):
            break
    assert set(owned) == set(servers), f"jobs landed only on {sorted(owned)}"
    for job_id in owned.values():
        wait_job_state(lb, job_id, {"Success"})
    return owned


def open_dashboard(page: Page, url: str) -> None:
    answer = page.goto(url)
    assert answer is not None and answer.status == 200
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(page.locator("#jobs")).not_to_have_attribute("aria-busy", "true")


def shown(page: Page, field: str) -> list[str]:
    """A data attribute of every row of the jobs table (jobId, state, type, server), in order."""
    rows = page.locator("#jobs-body tr[data-job-id]")
    return list(rows.evaluate_all(f"rows => rows.map(row => row.dataset.{field})"))


def job_row(page: Page, job_id: str) -> Locator:
    return page.locator(f'#jobs-body tr[data-job-id="{job_id}"]')


def save_readme_dashboard(
    page: Page, lb: httpx.Client, jobs_service: httpx.Client, servers: dict[str, httpx.Client]
) -> None:
    """The README's picture: jobs of several kinds on every server, one failed, one running, some waiting."""
    study, _ = create_study(lb, "README")
    for kind in ("modify", "anonymize", "modify", "anonymize"):
        create_async_job(lb, kind, study)
    failing = servers["orthanc-2"]
    nobody = {"AET": "NOBODY", "Host": "127.0.0.1", "Port": free_port()}  # nothing listens: fails at once
    assert failing.put("/modalities/nobody", json=nobody).status_code == 200
    failing.post("/modalities/nobody/store", json={"Resources": [study], "Asynchronous": True})
    direct = servers["orthanc-1"]
    with blocked(direct, study):
        for _ in range(2):
            create_async_job(direct, "archive", study)
        expect(page.locator('#jobs-body tr[data-state="Running"]')).to_have_count(1)
        expect(page.locator('#jobs-body tr[data-state="Pending"]')).to_have_count(2)
        expect(page.locator('#jobs-body tr[data-state="Failure"]')).to_have_count(1)
        total = sum(sum(entry["Jobs"].values()) for entry in jobs_service.get("/servers").json())
        expect(page.locator("#servers-foot td.total")).to_have_text(str(total))
        chart = page.locator("#chart svg")
        expect(chart).to_have_attribute("aria-label", re.compile(r"orthanc-2: \d+ completed, 1 failed"))
        page.evaluate("document.activeElement.blur()")
        README_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(README_SCREENSHOTS / "dashboard.png"))


def test_dashboard_shows_every_server_and_their_jobs(
    browser: Browser,
    page: Page,
    dashboard_url: str,
    lb: httpx.Client,
    jobs_service: httpx.Client,
    servers: dict[str, httpx.Client],
    jobs_by_server: dict[str, str],
) -> None:
    open_dashboard(page, dashboard_url)
    counts = {entry["Name"]: entry["Jobs"] for entry in jobs_service.get("/servers").json()}
    for name in servers:
        server_row = page.locator(f'#servers-body tr[data-server="{name}"]')
        expect(server_row).to_have_attribute("data-status", "alive")
        expect(server_row.locator("td.total")).not_to_have_text("0")
        assert sum(counts[name].values()) > 0
    for name, job_id in jobs_by_server.items():
        row = job_row(page, job_id)
        expect(row).to_have_attribute("data-server", name)
        expect(row).to_have_attribute("data-state", "Success")
        expect(row.locator("td").nth(2)).to_have_text("Archive")
    expect(page.locator("#servers-foot")).to_contain_text(f"{len(servers)} of {len(servers)} alive")
    expect(page.locator("#chart svg")).to_be_visible()
    screenshot(page, "dashboard")
    if SAVE_SCREENSHOTS:
        save_readme_dashboard(page, lb, jobs_service, servers)

    # The detail of a job: Orthanc's JSON, its owner, its times, and the link to its archive.
    name, job_id = sorted(jobs_by_server.items())[-1]
    job_row(page, job_id).get_by_role("button", name=f"Open job {job_id}").click()
    dialog = page.locator("#detail")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#detail-facts")).to_contain_text(name)
    expect(dialog.locator("#detail-json")).to_contain_text(f'"ID": "{job_id}"')
    download = dialog.get_by_role("link", name="Download archive")
    expect(download).to_have_attribute("href", f"/orthanc/jobs/{job_id}/archive")
    screenshot(page, "dashboard-job-detail")
    if SAVE_SCREENSHOTS:
        page.screenshot(path=str(README_SCREENSHOTS / "job-detail.png"))
    with page.expect_download() as downloading:
        download.click()
    archive = downloading.value.path()
    assert archive is not None and Path(archive).read_bytes()[:2] == b"PK"  # a ZIP, from the owner
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    # Without credentials: 401, for the page and for its script (headless Chromium then gives up the
    # navigation, as it cannot ask for credentials).
    anonymous = browser.new_context(viewport=VIEWPORT)
    try:
        anonymous.set_default_timeout(BROWSER_TIMEOUT_MS)
        stranger = anonymous.new_page()
        with stranger.expect_response(dashboard_url) as refused:
            try:
                stranger.goto(dashboard_url)
            except PlaywrightError as error:
                assert "ERR_INVALID_AUTH_CREDENTIALS" in str(error)
        assert refused.value.status == 401
        assert anonymous.request.get(dashboard_url + "app.js").status == 401
    finally:
        anonymous.close()


def test_opened_with_credentials_in_its_address(
    browser: Browser, dashboard_url: str, jobs_by_server: dict[str, str], servers: dict[str, httpx.Client]
) -> None:
    """As Orthanc Explorer is often opened (a bookmark, headless Chromium): http://user:password@host/...,
    with no login prompt. Every request of the page works, the event stream too."""
    user, password = DEMO_USER
    address = dashboard_url.replace("http://", f"http://{user}:{password}@", 1)
    context = browser.new_context(viewport=VIEWPORT)  # no credentials given to the browser otherwise
    try:
        context.set_default_timeout(BROWSER_TIMEOUT_MS)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        open_dashboard(page, address)
        for name in servers:
            expect(page.locator(f'#servers-body tr[data-server="{name}"]')).to_have_attribute(
                "data-status", "alive"
            )
        for name, job_id in jobs_by_server.items():
            expect(job_row(page, job_id)).to_have_attribute("data-server", name)
        expect(page.locator("#chart svg")).to_be_visible()
        assert errors == []
    finally:
        context.close()


def test_filters_order_pages_and_search(
    page: Page, dashboard_url: str, lb: httpx.Client, jobs_by_server: dict[str, str]
) -> None:
    open_dashboard(page, dashboard_url)
    name, job_id = sorted(jobs_by_server.items())[0]

    # By server: only its jobs, and as many as the API counts.
    page.get_by_label("Server", exact=True).select_option(name)
    expected = lb.get("/jobs", params={"server": name, "limit": 0}).headers["X-Total-Count"]
    expect(page.locator("#page-info")).to_contain_text(f"of {expected},")
    wait_for(lambda: set(shown(page, "server")) == {name}, timeout=10, what=f"only the jobs of {name}")

    # By state and type: Success archives.
    page.get_by_label("State", exact=True).select_option("Success")
    page.get_by_label("Type", exact=True).fill("Archive")
    page.get_by_label("Type", exact=True).press("Enter")
    wait_for(
        lambda: set(zip(shown(page, "state"), shown(page, "type"), strict=True)) == {("Success", "Archive")},
        timeout=10,
        what="only Success archives",
    )
    assert job_id in shown(page, "jobId")
    assert "status=Success" in page.url and "type=Archive" in page.url  # the view is in the address

    # Pages of 10, oldest first: the API's own order and paging (with at least 3 pages of jobs).
    study, _ = create_study(lb, "PAGES")
    while int(lb.get("/jobs", params={"limit": 0}).headers["X-Total-Count"]) <= 20:
        create_async_job(lb, "archive", study)
    page.get_by_role("button", name="Clear filters", exact=True).click()
    page.get_by_label("Per page", exact=True).select_option("10")
    page.get_by_label("Order", exact=True).select_option("asc")
    oldest = lb.get("/jobs", params={"limit": 20}).json()
    wait_for(lambda: shown(page, "jobId") == oldest[:10], timeout=10, what="the 10 oldest jobs")
    page.get_by_role("button", name="Next", exact=True).click()
    wait_for(lambda: shown(page, "jobId") == oldest[10:20], timeout=10, what="the next 10 oldest jobs")
    # Newest first: the last page of the API's order, reversed.
    page.get_by_label("Order", exact=True).select_option("desc")
    total = int(lb.get("/jobs", params={"limit": 0}).headers["X-Total-Count"])
    newest = lb.get("/jobs", params={"offset": max(0, total - 10)}).json()[::-1]
    wait_for(lambda: shown(page, "jobId") == newest, timeout=10, what="the 10 newest jobs")
    assert "limit=10" in page.url

    # Search by exact id, and an unknown id.
    page.get_by_label("Job id", exact=True).fill(job_id)
    page.get_by_role("button", name="Open", exact=True).click()
    expect(page.locator("#detail")).to_be_visible()
    expect(page.locator("#detail-facts")).to_contain_text(job_id)
    assert f"job={job_id}" in page.url
    page.get_by_role("button", name="Close the job details").click()
    page.get_by_label("Job id", exact=True).fill("00000000-0000-0000-0000-000000000000")
    page.get_by_role("button", name="Open", exact=True).click()
    expect(page.locator("#search-message")).to_have_text("No job with this id in the cluster.")
    screenshot(page, "dashboard-filters")


def test_dashboard_updates_live(
    page: Page, dashboard_url: str, lb: httpx.Client, jobs_service: httpx.Client
) -> None:
    open_dashboard(page, dashboard_url)
    page.evaluate("window.notReloaded = true")
    study, _ = create_study(lb, "LIVE")
    job_id = create_async_job(lb, "archive", study)
    # No reload, no polling: the event stream brings the new row, then its final state.
    expect(job_row(page, job_id)).to_have_attribute("data-state", "Success", timeout=LIVE_TIMEOUT_MS)
    expect(job_row(page, job_id).locator("td").nth(3)).to_have_text(
        lb.get(f"/jobs/{job_id}").json()["Server"]["Name"]
    )

    # The overview's counts follow too.
    def cluster_total() -> int:
        return sum(sum(entry["Jobs"].values()) for entry in jobs_service.get("/servers").json())

    expect(page.locator("#servers-foot td.total")).to_have_text(str(cluster_total()), timeout=LIVE_TIMEOUT_MS)
    assert page.evaluate("window.notReloaded") is True
    screenshot(page, "dashboard-live")


def test_actions_from_the_page(
    page: Page, dashboard_url: str, lb: httpx.Client, servers: dict[str, httpx.Client]
) -> None:
    direct = servers["orthanc-1"]
    study, _ = create_study(direct, "DASHBOARD-ACTIONS")
    with blocked(direct, study):
        job_id = create_async_job(direct, "archive", study)
        assert lb.get(f"/jobs/{job_id}").json()["State"] == "Pending"
        # The C-STORE that blocks the server: Running, there and (after a poll) in the job-service.
        blocker = next(job["ID"] for job in direct.get("/jobs?expand").json() if job["State"] == "Running")
        wait_job_state(lb, blocker, {"Running"}, timeout=10)
        open_dashboard(page, dashboard_url)
        expect(job_row(page, blocker).get_by_role("progressbar")).to_be_visible()  # running: a progress bar

        job_row(page, job_id).get_by_role("button", name=f"Open job {job_id}").click()
        dialog = page.locator("#detail")
        expect(dialog.locator("#detail-facts")).to_contain_text("orthanc-1")
        state = dialog.locator("#detail-facts .badge")
        expect(state).to_have_text("Pending")

        dialog.get_by_role("button", name="Pause").click()
        wait_job_state(lb, job_id, {"Paused"}, timeout=10)
        expect(state).to_have_text("Paused")
        expect(job_row(page, job_id)).to_have_attribute("data-state", "Paused")
        screenshot(page, "dashboard-paused")

        dialog.get_by_role("button", name="Resume").click()
        wait_job_state(lb, job_id, {"Pending"}, timeout=10)
        expect(state).to_have_text("Pending")

        # An action the owner refuses (resume a job that is not paused): the API's message is shown.
        resume = dialog.get_by_role("button", name="Resume")
        expect(resume).to_be_disabled()
        resume.evaluate("button => { button.disabled = false; }")
        resume.click()
        refused = lb.post(f"/jobs/{job_id}/resume")
        assert refused.status_code == 400
        expect(dialog.locator("#detail-message")).to_have_text(f"Resume failed: {refused.json()['Message']}")

        # Cancel asks first: dismissed, nothing happens; accepted, the job is cancelled.
        questions: list[str] = []

        def answer(accept: bool) -> Callable[[Dialog], None]:
            def on_dialog(question: Dialog) -> None:
                questions.append(question.message)
                if accept:
                    question.accept()
                else:
                    question.dismiss()

            return on_dialog

        page.once("dialog", answer(False))
        dialog.get_by_role("button", name="Cancel").click()
        wait_for(lambda: questions, timeout=5, what="the confirmation")
        assert job_id in questions[0]
        assert lb.get(f"/jobs/{job_id}").json()["State"] == "Pending"
        page.once("dialog", answer(True))
        dialog.get_by_role("button", name="Cancel").click()
        cancelled = wait_job_state(lb, job_id, {"Failure"}, timeout=10)
        assert cancelled["ErrorCode"] == 37  # Orthanc's "canceled job"
        expect(state).to_have_text("Failure")
        expect(dialog.locator("#detail-error")).to_contain_text(cancelled["ErrorDescription"])
        expect(dialog.get_by_role("button", name="Resubmit")).to_be_enabled()
        screenshot(page, "dashboard-cancelled")


def test_orthanc_explorer_shows_the_jobs_of_every_server(
    context: BrowserContext, cluster: ClusterState, jobs_by_server: dict[str, str]
) -> None:
    explorer = f"{cluster.orthanc_lb_url}/app/explorer.html"
    page = context.new_page()
    answer = page.goto(f"{explorer}#jobs")
    assert answer is not None and answer.status == 200
    expect(page.locator("#jobs")).to_have_class(re.compile(r"\bui-page-active\b"))
    listing = page.locator("#all-jobs")
    for job_id in jobs_by_server.values():
        expect(listing.locator(f'a[href="#job?uuid={job_id}"]')).to_contain_text(job_id)
    screenshot(page, "explorer-jobs")

    job_id = sorted(jobs_by_server.items())[-1][1]
    listing.locator(f'a[href="#job?uuid={job_id}"]').click()
    expect(page.locator("#job")).to_have_class(re.compile(r"\bui-page-active\b"))
    expect(page.locator("#jobs")).to_be_hidden()
    info = page.locator("#job-info")
    expect(info).to_contain_text(f"ID: {job_id}")
    expect(info).to_contain_text("Type: Archive")
    expect(info).to_contain_text("State: Success")
    screenshot(page, "explorer-job")

    # The same page, opened directly by its address.
    page.goto("about:blank")
    page.goto(f"{explorer}#job?uuid={job_id}")
    expect(page.locator("#job-info")).to_contain_text(f"ID: {job_id}")


# ---------------------------------------------------------------------------------------------------
# Issue #15: actions on many jobs, stuck jobs, where time goes, the address, search and export


def failing_stores(client: httpx.Client, study: str, count: int, aet: str) -> list[str]:
    """C-STOREs to a modality where nothing listens (``aet``, declared on the server ``client`` speaks to):
    each fails at once, a Failure to resubmit."""
    name = aet.lower()
    nobody = {"AET": aet, "Host": "127.0.0.1", "Port": free_port()}
    assert client.put(f"/modalities/{name}", json=nobody).status_code == 200
    body = {"Resources": [study], "Asynchronous": True}
    return [str(client.post(f"/modalities/{name}/store", json=body).json()["ID"]) for _ in range(count)]


def bulk_bar(page: Page) -> Locator:
    return page.get_by_role("group", name="Actions on the selected jobs")


def test_resubmit_selected_jobs_through_the_confirmation(
    page: Page,
    dashboard_url: str,
    lb: httpx.Client,
    jobs_service: httpx.Client,
    servers: dict[str, httpx.Client],
) -> None:
    direct = servers["orthanc-2"]
    study, _ = create_study(direct, "BULK-RESUBMIT")
    finished = create_async_job(direct, "archive", study)
    failed = failing_stores(direct, study, 3, "BULKNOBODY")
    for job_id in [finished, *failed]:
        wait_job_state(lb, job_id, {"Success", "Failure"})
    open_dashboard(page, f"{dashboard_url}#server=orthanc-2")

    # Three failed transfers and a successful archive, ticked (one with the keyboard).
    page.get_by_label(f"Select job {finished}").press("Space")
    for job_id in failed:
        page.get_by_label(f"Select job {job_id}").check()
    expect(page.locator("#selection-text")).to_have_text("4 jobs selected")
    bulk_bar(page).get_by_role("button", name="Resubmit").click()

    # The dry run's count, and the refusal with its reason, before anything is done.
    dry_run = jobs_service.post(
        "/actions", json={"Action": "resubmit", "Filter": {"ids": [finished, *failed]}, "DryRun": True}
    ).json()
    reason = dry_run["RefusedReasons"][0]["Reason"]
    dialog = page.locator("#bulk")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#bulk-question")).to_have_text(f"Resubmit 3 jobs? 1 refused: {reason}.")
    expect(dialog.locator("#bulk-reasons")).to_contain_text(f"1 refused: {reason}")
    confirm = dialog.get_by_role("button", name="Resubmit 3 jobs")
    expect(confirm).to_be_focused()
    save_for_readme(page, "bulk-confirm")

    # The run, followed to its results per job.
    confirm.click()
    expect(dialog.locator("#bulk-progress-text")).to_have_text(
        "Finished: 3 of 3 jobs · 3 done · 0 refused · 0 owner unreachable", timeout=LIVE_TIMEOUT_MS
    )
    results = dialog.locator("#bulk-results-body tr")
    expect(results).to_have_count(3)
    assert sorted(results.evaluate_all("rows => rows.map(row => row.cells[0].textContent)")) == sorted(failed)
    expect(dialog.locator('#bulk-results-body tr[data-result="done"]')).to_have_count(3)
    save_for_readme(page, "bulk-results")
    runs = jobs_service.get("/actions").json()
    assert (runs[0]["Action"], runs[0]["Done"], runs[0]["State"]) == ("resubmit", 3, "Done")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(bulk_bar(page)).to_be_hidden()  # the selection went with the run


def test_cancel_every_job_matching_the_filters(
    page: Page, dashboard_url: str, lb: httpx.Client, servers: dict[str, httpx.Client]
) -> None:
    direct = servers["orthanc-1"]
    study, _ = create_study(direct, "BULK-CANCEL")
    with blocked(direct, study):
        pending = [create_async_job(direct, "archive", study) for _ in range(12)]
        open_dashboard(page, f"{dashboard_url}#status=Pending&server=orthanc-1&limit=10")
        expect(page.locator("#page-info")).to_contain_text("of 12,")

        # The page, then every job matching the filters (12, not only the 10 shown).
        page.get_by_label("Select every job of this page").check()
        expect(page.locator("#selection-text")).to_have_text("10 jobs selected")
        page.get_by_role("button", name="Select all 12 jobs matching the filters").click()
        expect(page.locator("#selection-text")).to_have_text("All 12 jobs matching the filters selected")
        bulk_bar(page).get_by_role("button", name="Cancel").click()
        dialog = page.locator("#bulk")
        expect(dialog.locator("#bulk-question")).to_have_text("Cancel 12 jobs?")

        # Not now: nothing changes.
        dialog.get_by_role("button", name="Not now").click()
        expect(dialog).to_be_hidden()
        assert {lb.get(f"/jobs/{job_id}").json()["State"] for job_id in pending} == {"Pending"}

        bulk_bar(page).get_by_role("button", name="Cancel").click()
        dialog.get_by_role("button", name="Cancel 12 jobs").click()
        expect(dialog.locator("#bulk-progress-text")).to_contain_text(
            "Finished: 12 of 12 jobs · 12 done", timeout=LIVE_TIMEOUT_MS
        )
        expect(dialog.locator('#bulk-results-body tr[data-result="done"]')).to_have_count(12)
        for job_id in pending:
            assert wait_job_state(lb, job_id, {"Failure"}, timeout=10)["ErrorCode"] == 37  # cancelled
        dialog.get_by_role("button", name="Close").click()
        expect(page.locator("#page-info")).to_contain_text("0 of 0 jobs", timeout=LIVE_TIMEOUT_MS)


def test_where_time_goes(
    page: Page, dashboard_url: str, jobs_service: httpx.Client, jobs_by_server: dict[str, str]
) -> None:
    open_dashboard(page, dashboard_url)
    chart = page.locator("#time-chart svg")
    expect(chart).to_have_attribute(
        "aria-label",
        re.compile(r"^Jobs created per hour over the last 24 hours, by their state now: .*\d+ Success"),
    )

    # Every job created in the last 24 hours is in a bar, as the API counts them.
    def created(params: dict[str, int]) -> int:
        periods = jobs_service.get("/stats/jobs", params=params).json()["Periods"]
        return sum(sum(by_type.values()) for period in periods for by_type in period["States"].values())

    def drawn() -> int:
        return sum(
            map(int, chart.locator("g.period").evaluate_all("bars => bars.map(bar => bar.dataset.total)"))
        )

    wait_for(lambda: drawn() == created({"bucket": 3600, "window": 86400}), 10, what="every job in a bar")

    # The waiting and running times of the archives, in words.
    durations = jobs_service.get("/stats/durations", params={"window": 86400}).json()["Types"]
    archives = page.locator('#durations-body tr[data-type="Archive"]')
    expect(archives.locator("td").first).to_have_text(re.compile(r"^\d+$"))
    assert int(archives.locator("td").first.text_content() or 0) >= min(durations["Archive"]["Count"], 1)
    for cell in archives.locator("td").all()[1:]:
        assert re.fullmatch(
            r"< 0\.1 s|\d+(\.\d)? s|\d+ (min|h|d)( \d+ (s|min|h))?", cell.text_content() or ""
        ), cell.text_content()

    # One type, over the last 7 days by day.
    page.get_by_label("Job type", exact=True).select_option("Archive")
    expect(chart).to_have_attribute("aria-label", re.compile(r"^Archive jobs created per hour"))
    page.locator("section.insights").get_by_label("Period").select_option("week")
    expect(page.locator("#time-chart svg")).to_have_attribute(
        "aria-label", re.compile(r"^Archive jobs created per day over the last 7 days")
    )
    expect(page.locator("#time-chart g.period")).to_have_count(8)  # 7 days back from now: 8 days touched
    page.get_by_label("Job type", exact=True).select_option("")
    page.locator("section.insights").get_by_label("Period").select_option("day")
    expect(page.locator("#time-chart svg")).to_have_attribute(
        "aria-label", re.compile(r"^Jobs created per hour")
    )
    save_for_readme(page.locator("section.insights"), "time-charts")


def test_a_bookmarked_address_restores_the_view(
    page: Page, dashboard_url: str, lb: httpx.Client, jobs_by_server: dict[str, str]
) -> None:
    name, job_id = sorted(jobs_by_server.items())[0]
    address = f"{dashboard_url}#status=Success&type=Archive&server={name}&sort=asc&limit=10"
    open_dashboard(page, address)
    expect(page.get_by_label("State", exact=True)).to_have_value("Success")
    expect(page.get_by_label("Type", exact=True)).to_have_value("Archive")
    expect(page.get_by_label("Server", exact=True)).to_have_value(name)
    expect(page.get_by_label("Order", exact=True)).to_have_value("asc")
    expect(page.get_by_label("Per page", exact=True)).to_have_value("10")
    expected = lb.get(
        "/jobs", params={"status": "Success", "type": "Archive", "server": name, "limit": 10}
    ).json()
    wait_for(lambda: shown(page, "jobId") == expected, timeout=10, what="the bookmarked view's jobs")
    assert job_id in expected

    # A change of filter is in the address at once; a new tab on that address shows the same.
    page.get_by_label("State", exact=True).select_option("Failure")
    wait_for(lambda: "status=Failure" in page.url, timeout=5, what="the new state in the address")
    other = page.context.new_page()
    try:
        open_dashboard(other, page.url)
        expect(other.get_by_label("State", exact=True)).to_have_value("Failure")
        expect(other.get_by_label("Server", exact=True)).to_have_value(name)
        expect(other.get_by_label("Order", exact=True)).to_have_value("asc")
    finally:
        other.close()


def search_is_served(lb: httpx.Client) -> bool:
    """Whether the listing searches (q): a text no job holds matches nothing."""
    answer = lb.get("/jobs", params={"q": "no job holds this text", "limit": 0})
    return answer.status_code == 200 and answer.headers.get("X-Total-Count") == "0"


def test_search_finds_a_job_and_the_export_downloads_it(
    page: Page, dashboard_url: str, lb: httpx.Client, servers: dict[str, httpx.Client]
) -> None:
    if not search_is_served(lb):
        pytest.skip("this job-service's listing has no search (q) yet")
    direct = servers["orthanc-3"]
    study, _ = create_study(direct, "SEARCH")
    aet = f"FIND{os.urandom(4).hex().upper()}"  # in the job's Content (RemoteAet) only
    (job_id,) = failing_stores(direct, study, 1, aet)
    wait_job_state(lb, job_id, {"Failure"})
    open_dashboard(page, dashboard_url)
    page.get_by_label("Search", exact=True).fill(aet.lower())
    page.get_by_label("Search", exact=True).press("Enter")
    wait_for(lambda: shown(page, "jobId") == [job_id], timeout=10, what="only the job searched for")
    assert f"q={aet.lower()}" in page.url

    with page.expect_download() as downloading:
        page.get_by_role("link", name="Export CSV").click()
    path = downloading.value.path()
    assert path is not None
    lines = Path(path).read_text().splitlines()
    assert lines[0].startswith("ID,") and len(lines) == 2 and lines[1].startswith(job_id)


@pytest.fixture(scope="module")
def own_cluster(orthanc_version: str) -> Iterator[ClusterState]:
    """A cluster of two servers of this module's own, whose processes the test stops and restarts; a job is
    stuck after STUCK_AFTER seconds, and two webhooks send alerts nowhere."""
    # Two webhooks whose receivers are down (nothing listens on their ports): their attempts fail.
    webhooks = [
        {"Name": "on-call", "Url": f"http://127.0.0.1:{free_port()}/alerts", "Secret": "s" * 16},
        {
            "Name": "archive-team",
            "Url": f"http://127.0.0.1:{free_port()}/archives",
            "Secret": "a" * 16,
            "Events": ["job-failure"],
            "Types": ["Archive"],
        },
    ]
    settings = {"stuck_after": str(STUCK_AFTER), "webhooks": json.dumps(webhooks)}
    with running_cluster("dashboard", orthanc_version, ORTHANC_CONFIG, settings, instances=2) as state:
        yield state


def test_a_stuck_job_is_flagged_live(page: Page, own_cluster: ClusterState) -> None:
    """A C-STORE to a modality that never answers: Running, its progress still; after STUCK_AFTER seconds
    the row and the detail say since when, without a reload, until the job ends."""
    open_dashboard(page, f"{own_cluster.lb_url}/orthanc-jobs/ui/")
    page.evaluate("window.notReloaded = true")
    modality = SilentModality()
    with httpx.Client(base_url=f"{own_cluster.lb_url}/orthanc-1", auth=DEMO_USER, timeout=30) as direct:
        study, _ = create_study(direct, "STUCK")
        try:
            job_id = modality.store(direct, study)
            row = job_row(page, job_id)
            expect(row).to_have_attribute("data-state", "Running", timeout=LIVE_TIMEOUT_MS)
            badge = row.locator(".tag.stuck")
            expect(badge).to_have_text(
                re.compile(r"^stuck since (\d{4}-\d\d-\d\d )?\d\d:\d\d$"),
                timeout=STUCK_AFTER * 1000 + LIVE_TIMEOUT_MS,
            )
            expect(row).to_have_attribute("data-stuck", "true")
            save_for_readme(page.locator("section.jobs-panel"), "stuck-badge")
            row.get_by_role("button", name=f"Open job {job_id}").click()
            expect(page.locator("#detail-facts .tag.stuck")).to_have_text(badge.text_content() or "")
            save_for_readme(page, "stuck-detail")
            page.keyboard.press("Escape")
        finally:
            modality.close()  # the association breaks: the job fails, and is stuck no more
        expect(row).to_have_attribute("data-state", "Failure", timeout=LIVE_TIMEOUT_MS)
        expect(badge).to_have_count(0)
    assert page.evaluate("window.notReloaded") is True


def test_webhook_deliveries(page: Page, own_cluster: ClusterState) -> None:
    """A failed transfer is an alert for 'on-call', whose receiver is down: it is highlighted with its
    error; 'archive-team' (failed archives only) has nothing to send."""
    with httpx.Client(base_url=f"{own_cluster.lb_url}/orthanc-1", auth=DEMO_USER, timeout=30) as direct:
        study, _ = create_study(direct, "WEBHOOKS")
        failing_stores(direct, study, 1, "HOOKNOBODY")
    open_dashboard(page, f"{own_cluster.lb_url}/orthanc-jobs/ui/")
    panel = page.locator("#webhooks-panel")
    expect(panel).to_be_visible()
    expect(panel.locator("#webhooks-body tr")).to_have_count(2)
    on_call = panel.locator('tr[data-webhook="on-call"]')
    expect(on_call).to_have_class("failing", timeout=LIVE_TIMEOUT_MS)
    with httpx.Client(base_url=f"{own_cluster.lb_url}/orthanc-jobs", auth=DEMO_USER, timeout=30) as service:
        hooks = {hook["Name"]: hook for hook in service.get("/webhooks").json()}
    assert hooks["on-call"]["LastError"]
    expect(on_call).to_contain_text(hooks["on-call"]["LastError"])
    archives = panel.locator('tr[data-webhook="archive-team"]')
    expect(archives).to_contain_text("types: Archive")
    expect(archives).not_to_have_class("failing")
    save_for_readme(panel, "webhooks")


def cluster_command(state: ClusterState, *arguments: str) -> None:
    command = [sys.executable, "-m", "orthanc_jobs", "cluster", *arguments, "--dir", state.directory]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{arguments} failed:\n{result.stdout}\n{result.stderr}"


def test_live_through_a_stopped_server_and_a_restarted_job_service(
    page: Page, own_cluster: ClusterState
) -> None:
    open_dashboard(page, f"{own_cluster.lb_url}/orthanc-jobs/ui/")
    page.evaluate("window.notReloaded = true")
    second = page.locator('#servers-body tr[data-server="orthanc-2"]')
    expect(second).to_have_attribute("data-status", "alive")

    cluster_command(own_cluster, "stop", "orthanc-2")  # a graceful stop: `stopped` at once, by an event
    expect(second).to_have_attribute("data-status", "stopped", timeout=LIVE_TIMEOUT_MS)

    # The job-service restarts (its event ids start again): the page reconnects and stays live.
    cluster_command(own_cluster, "restart", "job-service")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=LIVE_TIMEOUT_MS)
    with httpx.Client(base_url=own_cluster.orthanc_lb_url, auth=DEMO_USER, timeout=30) as client:
        study, _ = create_study(client, "RESTART")
        job_id = create_async_job(client, "archive", study)
    expect(job_row(page, job_id)).to_have_attribute("data-state", "Success", timeout=LIVE_TIMEOUT_MS)
    assert page.evaluate("window.notReloaded") is True
    screenshot(page, "dashboard-after-restart")

"""What ``orthanc-jobs watch`` runs: a live view of the newest jobs (:class:`LiveJobs`), kept up to date by
a thread that follows the event stream while the main thread refreshes the display."""

import functools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

from orthanc_jobs.cli.render import jobs_table, make_console, server_status_text
from orthanc_jobs.client import ApiError, ClientError, JobFilter, JobsClient, ServerSentEvent, Unreachable

__all__ = ["LiveJobs", "watch_jobs"]


@dataclass
class LiveJobs:
    """The newest ``limit`` jobs that match a filter, kept up to date by the event stream."""

    where: JobFilter = field(default_factory=JobFilter)
    limit: int = 50
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The cluster's servers by ``Url`` (the latest of /orthanc-jobs/servers and ``server`` events).
    servers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def load(self, jobs: Sequence[dict[str, Any]], servers: Sequence[dict[str, Any]] | None = None) -> None:
        self.jobs = {str(job["ID"]): job for job in jobs if isinstance(job, dict) and "ID" in job}
        if servers is not None:
            self.servers = {str(server.get("Url")): server for server in servers}
        self._trim()

    def apply(self, event: ServerSentEvent) -> bool:
        """Apply one event; True when the whole state must be loaded again (``reset``)."""
        if event.event == "reset":
            return True
        try:
            data = event.json()
        except ValueError:
            return False
        if not isinstance(data, dict):
            return False
        if event.event == "job" and "ID" in data:
            job_id = str(data["ID"])
            if self.where.matches(data):
                self.jobs[job_id] = data
                self._trim()
            else:
                self.jobs.pop(job_id, None)
        elif event.event == "removed":
            self.jobs.pop(str(data.get("ID")), None)
        elif event.event == "server" and "Url" in data:
            self.servers[str(data["Url"])] = data
        return False

    def rows(self) -> list[dict[str, Any]]:
        """The jobs in the listing's order: creation time, then id."""
        return sorted(self.jobs.values(), key=lambda job: (str(job.get("CreationTime", "")), str(job["ID"])))

    def _trim(self) -> None:
        if len(self.jobs) > self.limit:
            for job in self.rows()[: len(self.jobs) - self.limit]:
                del self.jobs[str(job["ID"])]


class _WatchView:
    """What ``watch`` shows: the live jobs, the servers' statuses and the stream's; shared by the thread that
    follows the events and the display's refresh thread."""

    def __init__(self, jobs: LiveJobs, source: str, note: Callable[[str], None] | None) -> None:
        self.jobs = jobs
        self.source = source
        self.status = "connecting"
        self.stale = False  # a reload failed: retried at the next event
        self.loaded = threading.Event()  # set once the first jobs are there
        self._note = note
        self._lock = threading.Lock()

    def reload(self, client: JobsClient) -> None:
        page = client.latest_jobs(self.jobs.where, self.jobs.limit)
        servers = client.servers()
        with self._lock:
            self.jobs.load(page.jobs, servers)
            self.status, self.stale = "live", False
        self.loaded.set()
        if self._note is not None:
            self._note(f"watching {len(page.jobs)} jobs, following {client.service_url}/events")

    def apply(self, event: ServerSentEvent) -> bool:
        with self._lock:
            return self.jobs.apply(event)

    def disconnected(self, error: ClientError) -> None:
        self.status = f"reconnecting ({error.message})"
        if self._note is not None:
            self._note(self.status)

    def __rich__(self) -> RenderableType:
        with self._lock:
            rows = self.jobs.rows()
            servers = dict(self.jobs.servers)
        footer = Text(f"{len(rows)} newest jobs at {self.source}", style="dim")
        for server in servers.values():
            footer.append(f"  {server.get('Name')} ").append(
                server_status_text(str(server.get("Status", "")))
            )
        live = self.status == "live"
        footer.append(f"  · {self.status}", style="green" if live else "yellow").append(" · Ctrl-C quits")
        return Group(jobs_table(rows, servers, bars=True), footer)


def _follow(client: JobsClient, view: _WatchView, failures: "queue.Queue[BaseException]") -> None:
    """The thread of ``watch``: the current jobs at each connection, then the events; what ends it goes
    to ``failures``."""
    try:
        for event in client.events(on_connect=lambda: view.reload(client), on_disconnect=view.disconnected):
            if view.apply(event) or view.stale:
                try:
                    view.reload(client)
                except (Unreachable, ApiError) as error:
                    view.stale = True
                    view.disconnected(error)
    except BaseException as error:
        failures.put(error)


def _raise_failure(failures: "queue.Queue[BaseException]", timeout: float) -> None:
    """Wait at most ``timeout`` seconds for the follower's failure, and raise it."""
    try:
        error = failures.get(timeout=timeout)
    except queue.Empty:
        return
    raise error


def watch_jobs(client: JobsClient, where: JobFilter, limit: int, exit_after: float | None) -> None:
    """Show the newest ``limit`` jobs that match ``where``, live, until Ctrl-C or ``exit_after`` seconds;
    without a terminal, print the table once, at the end. The follower's failure is raised here."""
    deadline = float("inf") if exit_after is None else time.monotonic() + exit_after
    console = make_console()
    note = None if console.is_terminal else functools.partial(typer.echo, err=True)
    view = _WatchView(LiveJobs(where, limit), client.url, note)
    failures: queue.Queue[BaseException] = queue.Queue()
    threading.Thread(target=_follow, args=(client, view, failures), daemon=True).start()
    try:
        # The first jobs before the display, so that an error (refused credentials...) is the only output.
        while not view.loaded.is_set() and time.monotonic() < deadline:
            _raise_failure(failures, 0.1)
        with Live(view, console=console, refresh_per_second=4):
            while time.monotonic() < deadline:
                _raise_failure(failures, 0.2)
    except KeyboardInterrupt:
        pass
    if not console.is_terminal:
        console.line()  # the display's last line (a terminal gets it from Live)

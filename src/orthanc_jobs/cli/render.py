"""How the API commands show jobs and servers: Rich tables and text, times in the local zone."""

import json
import os
from datetime import UTC, datetime
from typing import Any

import typer
from rich import box
from rich.console import Console, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from orthanc_jobs.core.model import JobState, ServerStatus, parse_orthanc_time

_STATE_STYLES: dict[str, str] = {
    JobState.SUCCESS: "green",
    JobState.FAILURE: "red",
    JobState.RUNNING: "cyan",
    JobState.PENDING: "blue",
    JobState.PAUSED: "yellow",
    JobState.RETRY: "magenta",
}
_SERVER_STYLES: dict[str, str] = {
    ServerStatus.ALIVE: "green",
    ServerStatus.NOT_RESPONDING: "yellow",
    ServerStatus.STOPPED: "red",
}


def make_console(stderr: bool = False) -> Console:
    """Rich output; without a terminal (a pipe, a file), as wide as tables need rather than 80 columns."""
    output = Console(stderr=stderr, highlight=False)
    if not output.is_terminal and "COLUMNS" not in os.environ:
        output = Console(stderr=stderr, highlight=False, width=250)
    return output


def print_json(data: Any) -> None:
    output = make_console()
    if output.is_terminal:
        output.print_json(data=data)
    else:
        typer.echo(json.dumps(data, indent=2))


def local_time(value: Any) -> str:
    moment = parse_orthanc_time(str(value))
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else str(value or "")


def ago(value: Any) -> str:
    moment = parse_orthanc_time(str(value))
    if moment is None:
        return str(value or "")
    seconds = max(0, int((datetime.now(UTC) - moment).total_seconds()))
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if unit == 'day' and count > 1 else ''} ago"
    return f"{seconds} s ago"


def state_text(state: Any) -> Text:
    return Text(str(state), style=_STATE_STYLES.get(str(state), ""))


def _server_style(status: str) -> str:
    return _SERVER_STYLES.get(status, "red")


def server_status_text(status: str) -> Text:
    return Text(status, style=_server_style(status))


def server_text(job: dict[str, Any], servers: dict[str, dict[str, Any]]) -> Text:
    """The owner's name, with its status when it is not alive (the latest known, from ``servers``)."""
    owner = job.get("Server") or {}
    status = (servers.get(str(owner.get("Url"))) or owner).get("Status", "")
    text = Text(str(owner.get("Name") or owner.get("Url") or ""))
    if status and status != ServerStatus.ALIVE:
        text.append(f" ({status})", style=_server_style(status))
    if owner.get("HistoryOnly"):
        text.append(" history", style="dim")
    return text


def _progress(job: dict[str, Any], bar: bool) -> RenderableType:
    value = int(job.get("Progress") or 0)
    if not bar:
        return f"{value}%"
    grid = Table.grid(padding=(0, 1))
    style = "red" if job.get("State") == JobState.FAILURE else "bar.complete"
    grid.add_row(ProgressBar(total=100, completed=value, width=12, complete_style=style), f"{value:3d}%")
    return grid


def jobs_table(
    jobs: list[dict[str, Any]], servers: dict[str, dict[str, Any]] | None = None, bars: bool = False
) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, header_style="bold")
    table.add_column("ID", no_wrap=True, min_width=36)
    table.add_column("Type", no_wrap=True, min_width=20)
    table.add_column("State", no_wrap=True, min_width=7)
    table.add_column("Progress", justify="left" if bars else "right", no_wrap=True)
    table.add_column("Server", no_wrap=True, min_width=9)
    table.add_column("CreationTime", no_wrap=True)
    for job in jobs:
        table.add_row(
            str(job.get("ID", "")),
            str(job.get("Type", "")),
            state_text(job.get("State", "")),
            _progress(job, bars),
            server_text(job, servers or {}),
            local_time(job.get("CreationTime")),
        )
    return table


def job_summary(job: dict[str, Any]) -> Table:
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_row("Job", f"{job.get('Type', '')} {job.get('ID', '')}")
    summary.add_row("State", state_text(job.get("State", "")).append(f", {job.get('Progress', 0)}%"))
    server = server_text(job, {})
    if (job.get("Server") or {}).get("HistoryOnly"):
        server.append(" (its server no longer holds it: no outputs)", style="dim")
    summary.add_row("Server", server)
    times = f"created {local_time(job.get('CreationTime'))}"
    if job.get("CompletionTime"):
        times += f", completed {local_time(job.get('CompletionTime'))}"
    summary.add_row("Time", times)
    if job.get("State") == JobState.FAILURE:
        error = f"{job.get('ErrorDescription', '')} (code {job.get('ErrorCode')})"
        if job.get("ErrorDetails"):
            error += f": {job['ErrorDetails']}"
        summary.add_row("Error", Text(error, style="red"))
    return summary


def servers_table(servers: list[dict[str, Any]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, header_style="bold")
    for column in ("Name", "Status", "Url", "LastSeen", "Jobs"):
        table.add_column(column)
    for server in servers:
        counts = server.get("Jobs") or {}
        jobs = ", ".join(f"{count} {state}" for state, count in counts.items() if count) or "none"
        last_seen = server.get("LastSeen")
        table.add_row(
            str(server.get("Name", "")),
            server_status_text(str(server.get("Status", ""))),
            str(server.get("Url", "")),
            f"{local_time(last_seen)} ({ago(last_seen)})",
            jobs,
        )
    return table

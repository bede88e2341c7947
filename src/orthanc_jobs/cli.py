"""The ``orthanc-jobs`` command: the job-service, the local cluster, the demo, and the cluster's jobs
through the public API (list, show, actions, download, servers, watch)."""

import functools
import inspect
import json
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich import box, filesize
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from orthanc_jobs.client import (
    DEFAULT_ORTHANC_PATH,
    DEFAULT_URL,
    ApiError,
    BadCredentials,
    ClientError,
    JobFilter,
    JobsClient,
    LiveJobs,
    ServerSentEvent,
    Unreachable,
)
from orthanc_jobs.cluster.launcher import (
    STATE_FILE,
    ClusterError,
    ClusterState,
    describe,
    down,
    start_process,
    status_lines,
    stop_process,
    up,
)

app = typer.Typer(
    help="Cluster-wide Orthanc jobs: the job-service and a local cluster.", no_args_is_help=True
)
cluster_app = typer.Typer(help="A local cluster: PostgreSQL, N Orthanc, nginx and the job-service.")
app.add_typer(cluster_app, name="cluster")

DirOption = Annotated[Path, typer.Option("--dir", help="State folder of the cluster.")]
DEFAULT_DIR = Path(".cluster")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (ORTHANC_JOBS_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (ORTHANC_JOBS_PORT).")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Run the job-service (settings from ORTHANC_JOBS_* environment variables)."""
    import uvicorn

    from orthanc_jobs.api.app import create_app
    from orthanc_jobs.config import Settings

    settings = Settings()
    if host is not None:
        settings.host = host
    if port is not None:
        settings.port = port
    if not settings.secret.get_secret_value():
        _fail("the job-service needs a shared secret: set ORTHANC_JOBS_SECRET", code=2)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from orthanc_jobs.api.server import uvicorn_options

    uvicorn.run(
        create_app(settings),
        **uvicorn_options(settings.max_connections, settings.header_timeout),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=False,
        server_header=False,
        # Event streams stay open: on stop, they are closed after this long rather than awaited.
        timeout_graceful_shutdown=3,
    )


def _parse_pairs(pairs: list[str], example: str) -> dict[str, str]:
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r}: expected KEY=VALUE, e.g. {example}")
        parsed[key] = value
    return parsed


def _parse_overrides(pairs: list[str]) -> dict[str, Any]:
    overrides = {}
    for key, value in _parse_pairs(pairs, "ConcurrentJobs=1").items():
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            raise typer.BadParameter(f"{key}={value}: the value is not JSON (strings need quotes)") from None
    return overrides


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def _stop_on_signals() -> None:
    """Ctrl-C, kill and a closed terminal all end in KeyboardInterrupt, so that ``finally`` stops the
    cluster, even while it is starting (its processes have sessions of their own and would stay)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


def _run_until_interrupted(directory: Path, body: Callable[[], None]) -> None:
    """Run ``body`` (start, then wait) and stop the cluster whatever ends it."""
    _stop_on_signals()
    try:
        body()
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    except ClusterError as error:
        _fail(str(error))
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if (directory / STATE_FILE).exists():
            down(directory)


@cluster_app.command("up")
def cluster_up(
    instances: Annotated[int, typer.Option(help="Number of Orthanc servers.", min=1, max=32)] = 3,
    lb_port: Annotated[int, typer.Option(help="Port of the load balancer (0: any free port).")] = 8042,
    directory: DirOption = DEFAULT_DIR,
    detach: Annotated[bool, typer.Option(help="Return once started, leaving the cluster running.")] = False,
    orthanc_config: Annotated[
        list[str] | None,
        typer.Option(help="KEY=VALUE (JSON value) set in every Orthanc's configuration; repeatable."),
    ] = None,
    service_setting: Annotated[
        list[str] | None,
        typer.Option(help="NAME=VALUE setting of the job-service (e.g. poll_interval=0.5); repeatable."),
    ] = None,
    orthanc_root: Annotated[
        Path | None,
        typer.Option(
            help="Run Orthanc from this Debian root instead of the system's "
            "(scripts/install-orthanc-root.sh makes one with Orthanc 1.12)."
        ),
    ] = None,
) -> None:
    """Start the local cluster; in the foreground, Ctrl-C stops everything."""
    overrides = _parse_overrides(orthanc_config or [])
    settings = _parse_pairs(service_setting or [], "poll_interval=0.5")

    def start() -> None:
        state = up(
            directory,
            instances=instances,
            lb_port=lb_port,
            orthanc_overrides=overrides,
            service_settings=settings,
            orthanc_root=orthanc_root,
        )
        typer.echo("\n" + describe(state))
        if not detach:
            typer.echo("\nPress Ctrl-C to stop the cluster.")

    if not detach:
        _run_until_interrupted(directory, start)
        return
    try:
        start()
    except ClusterError as error:
        _fail(str(error))
    typer.echo(f"\nRunning in the background. Stop it with: orthanc-jobs cluster down --dir {directory}")


@cluster_app.command("down")
def cluster_down(directory: DirOption = DEFAULT_DIR) -> None:
    """Stop every process the cluster started."""
    try:
        down(directory)
    except ClusterError as error:
        _fail(str(error))


@cluster_app.command("status")
def cluster_status(directory: DirOption = DEFAULT_DIR) -> None:
    """Show the cluster's processes and URLs (exit code 1 if a process is not running)."""
    try:
        state = ClusterState.load(directory.resolve())
    except ClusterError as error:
        _fail(str(error), code=3)
        return
    lines, healthy = status_lines(state)
    typer.echo("\n".join(lines) + "\n\n" + describe(state))
    if not healthy:
        raise typer.Exit(1)


@cluster_app.command("stop")
def cluster_stop(
    name: Annotated[str, typer.Argument(help="orthanc-N, job-service, nginx or postgresql.")],
    directory: DirOption = DEFAULT_DIR,
) -> None:
    """Stop one process of the cluster (the others keep running)."""
    try:
        stop_process(directory, name)
    except ClusterError as error:
        _fail(str(error))


@cluster_app.command("start")
def cluster_start(
    name: Annotated[str, typer.Argument(help="orthanc-N, job-service, nginx or postgresql.")],
    directory: DirOption = DEFAULT_DIR,
) -> None:
    """Start again one stopped process of the cluster."""
    try:
        started = start_process(directory, name)
    except ClusterError as error:
        _fail(str(error))
        return
    typer.echo(f"{name} started (pid {started.pid})")


@cluster_app.command("restart")
def cluster_restart(
    name: Annotated[str, typer.Argument(help="orthanc-N, job-service, nginx or postgresql.")],
    directory: DirOption = DEFAULT_DIR,
) -> None:
    """Stop and start again one process of the cluster."""
    try:
        stop_process(directory, name)
        started = start_process(directory, name)
    except ClusterError as error:
        _fail(str(error))
        return
    typer.echo(f"{name} restarted (pid {started.pid})")


@app.command()
def demo(
    instances: Annotated[int, typer.Option(help="Number of Orthanc servers.", min=1, max=32)] = 3,
    lb_port: Annotated[int, typer.Option(help="Port of the load balancer (0: any free port).")] = 8042,
    directory: DirOption = DEFAULT_DIR,
) -> None:
    """Start the local cluster in the foreground with sample studies and jobs on every server."""
    from orthanc_jobs.cluster.demo import seed

    def start() -> None:
        state = up(directory, instances=instances, lb_port=lb_port)
        typer.echo("\nCreating sample studies and jobs through the load balancer...")
        typer.echo(seed(state))
        typer.echo("\n" + describe(state) + "\n\nPress Ctrl-C to stop the cluster.")

    _run_until_interrupted(directory, start)


@app.command("server-secret")
def server_secret(
    url: Annotated[str, typer.Argument(help="The server's URL, as its plugin registers it (ServerUrl).")],
) -> None:
    """Print the secret of one server's plugin (its OrthancJobs.Secret), made from the job-service's secret
    (ORTHANC_JOBS_SECRET) and the server's URL: a plugin's secret speaks for that server only."""
    from orthanc_jobs.config import Settings
    from orthanc_jobs.core.model import plugin_secret_for

    secret = Settings().secret.get_secret_value()
    if not secret:
        _fail("set ORTHANC_JOBS_SECRET to the job-service's secret", code=2)
    try:
        typer.echo(plugin_secret_for(secret, url))
    except ValueError as error:
        _fail(str(error), code=2)


@app.command("plugin-path")
def plugin_path() -> None:
    """Print the path of the reporter plugin, to copy next to an existing Orthanc."""
    from orthanc_jobs.cluster.launcher import REPORTER_PATH

    typer.echo(str(REPORTER_PATH))


# ---- the cluster's jobs, through the public API ---------------------------------------------------------

EXIT_API_ERROR = 1
EXIT_UNREACHABLE = 3
EXIT_BAD_CREDENTIALS = 4
EXIT_CODES = (
    "Exit codes: 0 done; 1 the API answered an error (unknown job, refused action...); 2 usage error; "
    "3 the job-service is unreachable; 4 the cluster refused the credentials."
)
_CREDENTIALS_HINT = "use --user/--password or ORTHANC_JOBS_CLI_USER/ORTHANC_JOBS_CLI_PASSWORD"
_STATE_STYLES = {
    "Success": "green",
    "Failure": "red",
    "Running": "cyan",
    "Pending": "blue",
    "Paused": "yellow",
    "Retry": "magenta",
}
_SERVER_STYLES = {"alive": "green", "not-responding": "yellow", "stopped": "red"}


def _check_url(value: str) -> str:
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as error:
        raise typer.BadParameter(f"{value!r}: {error}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise typer.BadParameter(f"{value!r} is not an http:// or https:// URL")
    return value


_CONNECTION_PANEL = "Connection"
UrlOption = Annotated[
    str,
    typer.Option(
        "--url",
        envvar="ORTHANC_JOBS_CLI_URL",
        callback=_check_url,
        rich_help_panel=_CONNECTION_PANEL,
        help="The load balancer's root URL.",
    ),
]
# Read here rather than by click, which takes an empty variable for an unset one: "" means the root.
_ORTHANC_PATH_VARIABLE = "ORTHANC_JOBS_CLI_ORTHANC_PATH"
OrthancPathOption = Annotated[
    str | None,
    typer.Option(
        "--orthanc-path",
        show_default=False,
        rich_help_panel=_CONNECTION_PANEL,
        help=f'Where Orthanc\'s REST API is under the URL, "" or / when at the root. '
        f"(env var: {_ORTHANC_PATH_VARIABLE}; default: {DEFAULT_ORTHANC_PATH})",
    ),
]
UserOption = Annotated[
    str | None,
    typer.Option("--user", envvar="ORTHANC_JOBS_CLI_USER", rich_help_panel=_CONNECTION_PANEL),
]
PasswordOption = Annotated[
    str | None,
    typer.Option(
        "--password",
        envvar="ORTHANC_JOBS_CLI_PASSWORD",
        show_default=False,
        rich_help_panel=_CONNECTION_PANEL,
    ),
]
_CONNECTION_PARAMETERS = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
    for name, default, annotation in (
        ("url", DEFAULT_URL, UrlOption),
        ("orthanc_path", None, OrthancPathOption),
        ("user", None, UserOption),
        ("password", None, PasswordOption),
    )
]

JobIdArgument = Annotated[str, typer.Argument(metavar="ID", help="The job's id.", show_default=False)]
StatusOption = Annotated[
    list[str] | None,
    typer.Option(
        "--status",
        metavar="STATE",
        help="Only jobs in this state (Pending, Running, Success, Failure, Paused, Retry); repeatable.",
    ),
]
TypeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--type",
        metavar="TYPE",
        help="Only jobs of this type (Archive, ResourceModification, ...); repeatable.",
    ),
]
ServerOption = Annotated[
    list[str] | None,
    typer.Option("--server", metavar="SERVER", help="Only jobs of this server (Name or Url); repeatable."),
]
LimitOption = Annotated[int, typer.Option(min=0, max=1_000_000, help="Most jobs shown.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON.")]


def _client_command(command: Callable[..., None]) -> Callable[..., None]:
    """A command of the public API: ``command(client, ...)`` gets the connection options (--url,
    --orthanc-path, --user, --password) as a :class:`JobsClient`, and its errors become one line on stderr
    with the exit code of ``EXIT_CODES``."""
    parameters = [p for p in inspect.signature(command).parameters.values() if p.name != "client"]

    @functools.wraps(command)
    def run(
        *, url: str, orthanc_path: str | None, user: str | None, password: str | None, **options: Any
    ) -> None:
        if password and not user:
            raise typer.BadParameter("a password needs a user (--user)", param_hint="'--password'")
        if orthanc_path is None:
            orthanc_path = os.environ.get(_ORTHANC_PATH_VARIABLE, DEFAULT_ORTHANC_PATH)
        with JobsClient(url, orthanc_path, user, password) as client:
            try:
                command(client, **options)
            except ClientError as error:
                if isinstance(error, BadCredentials):
                    refused = "refused these" if client.has_credentials else "needs"
                    _fail(f"the cluster {refused} credentials ({_CREDENTIALS_HINT})", EXIT_BAD_CREDENTIALS)
                _fail(error.message, EXIT_UNREACHABLE if isinstance(error, Unreachable) else EXIT_API_ERROR)

    run.__signature__ = inspect.Signature(parameters + _CONNECTION_PARAMETERS)  # type: ignore[attr-defined]
    return run


def _console(stderr: bool = False) -> Console:
    """Rich output; without a terminal (a pipe, a file), as wide as tables need rather than 80 columns."""
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, highlight=False, width=250)
    return console


def _print_json(data: Any) -> None:
    console = _console()
    if console.is_terminal:
        console.print_json(data=data)
    else:
        typer.echo(json.dumps(data, indent=2))


def _parse_time(value: Any) -> datetime | None:
    """A time as Orthanc writes it (UTC ``YYYYMMDDTHHMMSS.ffffff``)."""
    for layout in ("%Y%m%dT%H%M%S.%f", "%Y%m%dT%H%M%S"):
        try:
            return datetime.strptime(str(value), layout).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def _local_time(value: Any) -> str:
    moment = _parse_time(value)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else str(value or "")


def _ago(value: Any) -> str:
    moment = _parse_time(value)
    if moment is None:
        return str(value or "")
    seconds = max(0, int((datetime.now(UTC) - moment).total_seconds()))
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if unit == 'day' and count > 1 else ''} ago"
    return f"{seconds} s ago"


def _state_text(state: Any) -> Text:
    return Text(str(state), style=_STATE_STYLES.get(str(state), ""))


def _server_text(job: dict[str, Any], servers: dict[str, dict[str, Any]]) -> Text:
    """The owner's name, with its status when it is not alive (the latest known, from ``servers``)."""
    owner = job.get("Server") or {}
    status = (servers.get(str(owner.get("Url"))) or owner).get("Status", "")
    text = Text(str(owner.get("Name") or owner.get("Url") or ""))
    if status and status != "alive":
        text.append(f" ({status})", style=_SERVER_STYLES.get(status, "red"))
    if owner.get("HistoryOnly"):
        text.append(" history", style="dim")
    return text


def _progress(job: dict[str, Any], bar: bool) -> RenderableType:
    value = int(job.get("Progress") or 0)
    if not bar:
        return f"{value}%"
    grid = Table.grid(padding=(0, 1))
    style = "red" if job.get("State") == "Failure" else "bar.complete"
    grid.add_row(ProgressBar(total=100, completed=value, width=12, complete_style=style), f"{value:3d}%")
    return grid


def _jobs_table(
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
            _state_text(job.get("State", "")),
            _progress(job, bars),
            _server_text(job, servers or {}),
            _local_time(job.get("CreationTime")),
        )
    return table


def _job_summary(job: dict[str, Any]) -> Table:
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_row("Job", f"{job.get('Type', '')} {job.get('ID', '')}")
    summary.add_row("State", _state_text(job.get("State", "")).append(f", {job.get('Progress', 0)}%"))
    server = _server_text(job, {})
    if (job.get("Server") or {}).get("HistoryOnly"):
        server.append(" (its server no longer holds it: no outputs)", style="dim")
    summary.add_row("Server", server)
    times = f"created {_local_time(job.get('CreationTime'))}"
    if job.get("CompletionTime"):
        times += f", completed {_local_time(job.get('CompletionTime'))}"
    summary.add_row("Time", times)
    if job.get("State") == "Failure":
        error = f"{job.get('ErrorDescription', '')} (code {job.get('ErrorCode')})"
        if job.get("ErrorDetails"):
            error += f": {job['ErrorDetails']}"
        summary.add_row("Error", Text(error, style="red"))
    return summary


@app.command("list", epilog=EXIT_CODES)
@_client_command
def list_jobs(
    client: JobsClient,
    status: StatusOption = None,
    job_type: TypeOption = None,
    server: ServerOption = None,
    limit: LimitOption = 50,
    offset: Annotated[int, typer.Option(min=0, help="Jobs to skip (the next page).")] = 0,
    as_json: JsonOption = False,
) -> None:
    """List the cluster's jobs, oldest first: ID, Type, State, Progress, Server, CreationTime."""
    page = client.list_jobs(
        JobFilter.of(status or [], job_type or [], server or []), limit=limit, offset=offset
    )
    if as_json:
        _print_json(page.jobs)
        return
    console = _console()
    if page.jobs:
        console.print(_jobs_table(page.jobs))
    total = page.total if page.total is not None else offset + len(page.jobs)
    if not page.jobs:
        footer = f"no jobs (of {total})" if total else "no jobs"
    else:
        footer = f"jobs {offset + 1}-{offset + len(page.jobs)} of {total}"
        if offset + len(page.jobs) < total:
            footer += f" (next: --offset {offset + len(page.jobs)})"
    console.print(footer, style="dim")


@app.command(epilog=EXIT_CODES)
@_client_command
def show(
    client: JobsClient,
    job_id: JobIdArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Only the JSON, without the summary.")] = False,
) -> None:
    """Show one job: its JSON (as GET /jobs/ID answers it) and a short summary."""
    job = client.get_job(job_id)
    _print_json(job)
    if not as_json:
        console = _console()
        console.print()
        console.print(_job_summary(job))


def _act(client: JobsClient, job_id: str, action: str) -> None:
    job = client.act(job_id, action)
    _console().print(Text.assemble(f"job {job_id}: ", _state_text(job.get("State", ""))))


@app.command(epilog=EXIT_CODES)
@_client_command
def pause(client: JobsClient, job_id: JobIdArgument) -> None:
    """Pause a job (Pending or Running), then print its state."""
    _act(client, job_id, "pause")


@app.command(epilog=EXIT_CODES)
@_client_command
def resume(client: JobsClient, job_id: JobIdArgument) -> None:
    """Resume a paused job, then print its state."""
    _act(client, job_id, "resume")


@app.command(epilog=EXIT_CODES)
@_client_command
def cancel(client: JobsClient, job_id: JobIdArgument) -> None:
    """Cancel a job (it ends as Failure), then print its state."""
    _act(client, job_id, "cancel")


@app.command(epilog=EXIT_CODES)
@_client_command
def resubmit(client: JobsClient, job_id: JobIdArgument) -> None:
    """Submit a failed job again, then print its state."""
    _act(client, job_id, "resubmit")


@app.command(epilog=EXIT_CODES)
@_client_command
def download(
    client: JobsClient,
    job_id: JobIdArgument,
    output: Annotated[
        Path,
        typer.Option("--output", "-o", dir_okay=False, help="The file to write (replaced if it exists)."),
    ],
    key: Annotated[str, typer.Option(help="The output to download.")] = "archive",
) -> None:
    """Download an output of a job (the ZIP of an asynchronous archive) to a file, with a progress bar."""
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    # Transient, and shown only once the answer is there: an error stays the only output.
    bar = Progress(*columns, TimeRemainingColumn(), console=_console(stderr=True), transient=True)
    task = bar.add_task(output.name, total=None, start=False)

    def progress(received: int, total: int | None) -> None:
        if not bar.live.is_started:
            bar.start()
            bar.start_task(task)
        bar.update(task, completed=received, total=total)

    try:
        size = client.download(job_id, output, key, progress)
    except OSError as error:
        _fail(f"cannot write {output}: {error.strerror or error}")
        return
    finally:
        if bar.live.is_started:
            bar.stop()
    _console().print(f"saved {filesize.decimal(size)} to {output}")


@app.command("servers", epilog=EXIT_CODES)
@_client_command
def list_servers(client: JobsClient, as_json: JsonOption = False) -> None:
    """List the cluster's Orthanc servers: Name, Status, Url, LastSeen, and their jobs by state."""
    servers = client.servers()
    if as_json:
        _print_json(servers)
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, header_style="bold")
    for column in ("Name", "Status", "Url", "LastSeen", "Jobs"):
        table.add_column(column)
    for server in servers:
        counts = server.get("Jobs") or {}
        jobs = ", ".join(f"{count} {state}" for state, count in counts.items() if count) or "none"
        status = str(server.get("Status", ""))
        last_seen = server.get("LastSeen")
        table.add_row(
            str(server.get("Name", "")),
            Text(status, style=_SERVER_STYLES.get(status, "red")),
            str(server.get("Url", "")),
            f"{_local_time(last_seen)} ({_ago(last_seen)})",
            jobs,
        )
    _console().print(table)


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
            status = str(server.get("Status", ""))
            footer.append(f"  {server.get('Name')} ").append(status, style=_SERVER_STYLES.get(status, "red"))
        live = self.status == "live"
        footer.append(f"  · {self.status}", style="green" if live else "yellow").append(" · Ctrl-C quits")
        return Group(_jobs_table(rows, servers, bars=True), footer)


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


@app.command(epilog=EXIT_CODES)
@_client_command
def watch(
    client: JobsClient,
    status: StatusOption = None,
    job_type: TypeOption = None,
    server: ServerOption = None,
    limit: LimitOption = 50,
    exit_after: Annotated[
        float | None, typer.Option(min=0, metavar="SECONDS", help="Stop after this many seconds.")
    ] = None,
) -> None:
    """Follow the newest jobs live, with progress bars, from the event stream; Ctrl-C quits.

    Without a terminal (a pipe, a file), the table is printed once, when watch stops.
    """
    deadline = float("inf") if exit_after is None else time.monotonic() + exit_after
    console = _console()
    note = None if console.is_terminal else functools.partial(typer.echo, err=True)
    where = JobFilter.of(status or [], job_type or [], server or [])
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


def main() -> None:
    app()

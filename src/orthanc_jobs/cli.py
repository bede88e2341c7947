"""The ``orthanc-jobs`` command: the job-service, the local cluster and the demo."""

import json
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

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

    from orthanc_jobs.app import create_app
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
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=False,
        server_header=False,
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


@app.command("plugin-path")
def plugin_path() -> None:
    """Print the path of the reporter plugin, to copy next to an existing Orthanc."""
    from orthanc_jobs.cluster.launcher import REPORTER_PATH

    typer.echo(str(REPORTER_PATH))


def main() -> None:
    app()

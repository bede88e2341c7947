"""The ``orthanc-jobs`` command: the job-service, the local cluster and the demo."""

import json
import logging
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from orthanc_jobs.cluster.launcher import (
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


def _parse_overrides(pairs: list[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r}: expected KEY=VALUE (VALUE in JSON, e.g. ConcurrentJobs=1)")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            raise typer.BadParameter(f"{pair!r}: the value is not JSON (strings need quotes)") from None
    return overrides


def _parse_settings(pairs: list[str]) -> dict[str, str]:
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r}: expected NAME=VALUE, e.g. poll_interval=0.5")
        settings[key] = value
    return settings


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


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
    settings = _parse_settings(service_setting or [])
    try:
        state = up(
            directory,
            instances=instances,
            lb_port=lb_port,
            orthanc_overrides=overrides,
            service_settings=settings,
        )
    except ClusterError as error:
        _fail(str(error))
        return
    typer.echo("\n" + describe(state))
    if detach:
        typer.echo(f"\nRunning in the background. Stop it with: orthanc-jobs cluster down --dir {directory}")
        return
    typer.echo("\nPress Ctrl-C to stop the cluster.")
    try:
        _wait_for_signal()
    finally:
        down(directory)


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

    try:
        state = up(directory, instances=instances, lb_port=lb_port)
    except ClusterError as error:
        _fail(str(error))
        return
    try:
        typer.echo("\nCreating sample studies and jobs through the load balancer...")
        typer.echo(seed(state))
        typer.echo("\n" + describe(state) + "\n\nPress Ctrl-C to stop the cluster.")
        _wait_for_signal()
    finally:
        down(directory)


@app.command("plugin-path")
def plugin_path() -> None:
    """Print the path of the reporter plugin, to copy next to an existing Orthanc."""
    from orthanc_jobs.cluster.launcher import REPORTER_PATH

    typer.echo(str(REPORTER_PATH))


def main() -> None:
    app()

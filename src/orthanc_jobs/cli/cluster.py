"""The local cluster's commands (``cluster up|down|status|stop|start|restart``), ``demo``, and the two
helpers for adding the plugin to an existing Orthanc (``server-secret``, ``plugin-path``)."""

import json
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from orthanc_jobs.cli.errors import CommandError
from orthanc_jobs.cluster import demo as demo_cluster
from orthanc_jobs.cluster.launcher import (
    SAME_ROOT,
    STATE_FILE,
    ClusterError,
    ClusterState,
    ask_orthanc_versions,
    ask_replicas,
    describe,
    down,
    find_binaries,
    service_database_for,
    start_process,
    status_lines,
    stop_process,
    up,
)

#: ``demo``, ``server-secret`` and ``plugin-path``.
commands = typer.Typer()
#: ``cluster ...``.
cluster_app = typer.Typer(
    help="A local cluster: PostgreSQL, N Orthanc, nginx and the job-service's replicas."
)

DirOption = Annotated[Path, typer.Option("--dir", help="State folder of the cluster.")]
DEFAULT_DIR = Path(".cluster")
InstancesOption = Annotated[int, typer.Option(help="Number of Orthanc servers.", min=1, max=32)]
LbPortOption = Annotated[int, typer.Option(help="Port of the load balancer (0: any free port).")]
ServiceReplicasOption = Annotated[
    int,
    typer.Option(
        help="Number of job-service replicas: job-service alone, or job-service-1 .. job-service-N, "
        "sharing the cluster's PostgreSQL.",
        min=1,
        max=16,
    ),
]
ProcessArgument = Annotated[
    str,
    typer.Argument(help="orthanc-N, job-service (job-service-N with replicas), nginx or postgresql."),
]


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
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if (directory / STATE_FILE).exists():
            down(directory)


@cluster_app.command("up")
def cluster_up(
    instances: InstancesOption = 3,
    lb_port: LbPortOption = 8042,
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
    server_orthanc_root: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=ROOT: run this server's Orthanc from another Debian root ('system': the system's), "
            "e.g. orthanc-2=.cache/orthanc-1.12 for a cluster of mixed versions; repeatable."
        ),
    ] = None,
    service_replicas: ServiceReplicasOption = 1,
    service_database: Annotated[
        str | None,
        typer.Option(
            help="Where the job-service keeps its history: 'sqlite' (a file in --dir; one replica only) or "
            "'postgresql' (the cluster's PostgreSQL, schema orthanc_jobs). "
            "[default: sqlite with one replica, postgresql with more]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Start the local cluster; in the foreground, Ctrl-C stops everything."""
    try:
        service_database = service_database_for(service_replicas, service_database)
    except ClusterError as error:
        raise typer.BadParameter(str(error), param_hint="--service-database") from None
    overrides = _parse_overrides(orthanc_config or [])
    settings = _parse_pairs(service_setting or [], "poll_interval=0.5")
    server_roots = {
        name: _root(value)
        for name, value in _parse_pairs(server_orthanc_root or [], "orthanc-2=ROOT").items()
    }

    def start() -> None:
        state = up(
            directory,
            instances=instances,
            lb_port=lb_port,
            orthanc_overrides=overrides,
            service_settings=settings,
            orthanc_root=orthanc_root,
            server_roots=server_roots,
            service_replicas=service_replicas,
            service_database=service_database,
        )
        typer.echo("\n" + describe(state))
        if not detach:
            typer.echo("\nPress Ctrl-C to stop the cluster.")

    if not detach:
        _run_until_interrupted(directory, start)
        return
    start()
    typer.echo(f"\nRunning in the background. Stop it with: orthanc-jobs cluster down --dir {directory}")


@cluster_app.command("down")
def cluster_down(directory: DirOption = DEFAULT_DIR) -> None:
    """Stop every process the cluster started."""
    down(directory)


@cluster_app.command("status")
def cluster_status(ctx: typer.Context, directory: DirOption = DEFAULT_DIR) -> None:
    """Show the cluster's processes, which job-service replica leads, each server's Orthanc version, and the
    URLs (exit code 1 if a process is not running or a replica does not answer)."""
    try:
        state = ClusterState.load(directory.resolve())
    except ClusterError as error:
        raise CommandError(str(error), exit_code=3) from None
    transport = ctx.find_object(httpx.BaseTransport)
    replicas = ask_replicas(state.service_urls, transport=transport)
    versions = ask_orthanc_versions(state.orthanc_urls, transport=transport)
    lines, healthy = status_lines(state, replicas, versions)
    typer.echo("\n".join(lines) + "\n\n" + describe(state))
    if not healthy:
        raise typer.Exit(1)


@cluster_app.command("stop")
def cluster_stop(name: ProcessArgument, directory: DirOption = DEFAULT_DIR) -> None:
    """Stop one process of the cluster (the others keep running)."""
    stop_process(directory, name)


OrthancRootOption = Annotated[
    str | None,
    typer.Option(
        help="For an Orthanc server: run it from this Debian root from now on ('system': the system's "
        "Orthanc), on the same database and storage (an upgrade, one server at a time).",
        show_default=False,
    ),
]


def _root(value: str) -> Path | None:
    return None if value == "system" else Path(value)


@cluster_app.command("start")
def cluster_start(
    name: ProcessArgument, directory: DirOption = DEFAULT_DIR, orthanc_root: OrthancRootOption = None
) -> None:
    """Start again one stopped process of the cluster."""
    started = start_process(directory, name, SAME_ROOT if orthanc_root is None else _root(orthanc_root))
    typer.echo(f"{name} started (pid {started.pid})")


@cluster_app.command("restart")
def cluster_restart(
    name: ProcessArgument, directory: DirOption = DEFAULT_DIR, orthanc_root: OrthancRootOption = None
) -> None:
    """Stop and start again one process of the cluster (e.g. an Orthanc server on another version)."""
    if orthanc_root is not None:
        find_binaries(_root(orthanc_root))  # a root that cannot run leaves the server running
    stop_process(directory, name)
    started = start_process(directory, name, SAME_ROOT if orthanc_root is None else _root(orthanc_root))
    typer.echo(f"{name} restarted (pid {started.pid})")


@commands.command()
def demo(
    instances: InstancesOption = 3,
    lb_port: LbPortOption = 8042,
    directory: DirOption = DEFAULT_DIR,
    service_replicas: ServiceReplicasOption = demo_cluster.SERVICE_REPLICAS,
) -> None:
    """Start the local cluster in the foreground with sample studies and jobs on every server, and the
    job-service's replicas on the cluster's PostgreSQL."""

    def start() -> None:
        state = up(directory, instances=instances, lb_port=lb_port, service_replicas=service_replicas)
        typer.echo("\nCreating sample studies and jobs through the load balancer...")
        typer.echo(demo_cluster.seed(state))
        typer.echo("\n" + describe(state) + "\n\nPress Ctrl-C to stop the cluster.")

    _run_until_interrupted(directory, start)


@commands.command("server-secret")
def server_secret(
    url: Annotated[str, typer.Argument(help="The server's URL, as its plugin registers it (ServerUrl).")],
) -> None:
    """Print the secret of one server's plugin (its OrthancJobs.Secret), made from the job-service's secret
    (ORTHANC_JOBS_SECRET) and the server's URL: a plugin's secret speaks for that server only."""
    from orthanc_jobs.config import Settings
    from orthanc_jobs.core.model import plugin_secret_for

    secret = Settings().secret.get_secret_value()
    if not secret:
        raise CommandError("set ORTHANC_JOBS_SECRET to the job-service's secret", exit_code=2)
    try:
        typer.echo(plugin_secret_for(secret, url))
    except ValueError as error:
        raise CommandError(str(error), exit_code=2) from None


@commands.command("plugin-path")
def plugin_path() -> None:
    """Print the path of the reporter plugin, to copy next to an existing Orthanc."""
    from orthanc_jobs.cluster.launcher import REPORTER_PATH

    typer.echo(str(REPORTER_PATH))

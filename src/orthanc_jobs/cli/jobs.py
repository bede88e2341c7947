"""The cluster's jobs through the public API: list, show, pause/resume/cancel/resubmit, download, servers,
watch. Each is a :class:`~orthanc_jobs.cli.connection.ClientCommand`: it takes the connection options and
finds its client in ``ctx.obj``."""

from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import filesize
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from orthanc_jobs.cli.bulk import act_on_many
from orthanc_jobs.cli.connection import ClientCommand, client_of
from orthanc_jobs.cli.errors import CommandError
from orthanc_jobs.cli.render import (
    job_summary,
    jobs_table,
    make_console,
    print_json,
    servers_table,
    state_text,
)
from orthanc_jobs.cli.watch import watch_jobs
from orthanc_jobs.client import JobFilter
from orthanc_jobs.core.bulk import DELETE
from orthanc_jobs.core.model import JobAction

commands = typer.Typer()

JobIdArgument = Annotated[str, typer.Argument(metavar="ID", help="The job's id.", show_default=False)]


def _filter_option(flag: str, metavar: str, only: str) -> Any:
    return typer.Option(flag, metavar=metavar, help=f"Only jobs {only}; repeatable.")


StatusOption = Annotated[
    list[str] | None,
    _filter_option("--status", "STATE", "in this state (Pending, Running, Success, Failure, Paused, Retry)"),
]
TypeOption = Annotated[
    list[str] | None, _filter_option("--type", "TYPE", "of this type (Archive, ResourceModification, ...)")
]
ServerOption = Annotated[
    list[str] | None, _filter_option("--server", "SERVER", "of this server (Name or Url)")
]
LimitOption = Annotated[int, typer.Option(min=0, max=1_000_000, help="Most jobs shown.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON.")]


class OutputFormat(StrEnum):
    TABLE = "table"
    CSV = "csv"
    JSON = "json"


def _time_option(flag: str, what: str, bound: str) -> Any:
    return typer.Option(
        flag,
        metavar="TIME",
        help=f"Only jobs {what} {bound}: 20250101T120000 (UTC), 2025-01-01T12:00:00Z or 2025-01-01"
        + (" (the whole day)." if bound == "until" else "."),
    )


@commands.command("list", cls=ClientCommand)
def list_jobs(
    ctx: typer.Context,
    status: StatusOption = None,
    job_type: TypeOption = None,
    server: ServerOption = None,
    job_id: Annotated[list[str] | None, _filter_option("--id", "ID", "with this id")] = None,
    created_since: Annotated[str | None, _time_option("--created-since", "created", "since")] = None,
    created_until: Annotated[str | None, _time_option("--created-until", "created", "until")] = None,
    completed_since: Annotated[str | None, _time_option("--completed-since", "finished", "since")] = None,
    completed_until: Annotated[str | None, _time_option("--completed-until", "finished", "until")] = None,
    text: Annotated[
        str | None,
        typer.Option(
            "--q",
            metavar="TEXT",
            help="Only jobs with this text (any case) in their ID, Type, Content (Description...), "
            "ErrorDescription or ErrorDetails.",
        ),
    ] = None,
    resource: Annotated[
        str | None,
        typer.Option(
            metavar="ORTHANC-ID", help="Only jobs whose Content names this patient/study/series/instance."
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            min=0, max=1_000_000, help="Most jobs shown (default: 50 in a table, all in csv or json)."
        ),
    ] = None,
    offset: Annotated[int, typer.Option(min=0, help="Jobs to skip (the next page).")] = 0,
    output: Annotated[
        OutputFormat, typer.Option("--format", help="A table, or the export's CSV or JSON (for scripts).")
    ] = OutputFormat.TABLE,
    as_json: JsonOption = False,
) -> None:
    """List the cluster's jobs, oldest first: ID, Type, State, Progress, Server, CreationTime."""
    try:
        where = JobFilter.of(
            status or [],
            job_type or [],
            server or [],
            job_id or [],
            created_since=created_since,
            created_until=created_until,
            completed_since=completed_since,
            completed_until=completed_until,
            text=text,
            resource=resource,
        )
    except ValueError as error:
        raise CommandError(str(error), exit_code=2) from None
    if output is not OutputFormat.TABLE:
        if as_json:
            raise CommandError("--json and --format csv/json: one or the other", exit_code=2)
        printed = typer.get_binary_stream("stdout")
        for chunk in client_of(ctx).export(where, output, limit=limit, offset=offset):
            printed.write(chunk)
        printed.flush()
        return
    limit = 50 if limit is None else limit
    page = client_of(ctx).list_jobs(where, limit=limit, offset=offset)
    if as_json:
        print_json(page.jobs)
        return
    console = make_console()
    if page.jobs:
        console.print(jobs_table(page.jobs))
    total = page.total if page.total is not None else offset + len(page.jobs)
    if not page.jobs:
        footer = f"no jobs (of {total})" if total else "no jobs"
    else:
        footer = f"jobs {offset + 1}-{offset + len(page.jobs)} of {total}"
        if offset + len(page.jobs) < total:
            footer += f" (next: --offset {offset + len(page.jobs)})"
    console.print(footer, style="dim")


@commands.command(cls=ClientCommand)
def show(
    ctx: typer.Context,
    job_id: JobIdArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Only the JSON, without the summary.")] = False,
) -> None:
    """Show one job: its JSON (as GET /jobs/ID answers it) and a short summary."""
    job = client_of(ctx).get_job(job_id)
    print_json(job)
    if not as_json:
        console = make_console()
        console.print()
        console.print(job_summary(job))


_ACTIONS = {
    JobAction.PAUSE: "Pause a job (Pending or Running), then print its state.",
    JobAction.RESUME: "Resume a paused job, then print its state.",
    JobAction.CANCEL: "Cancel a job (it ends as Failure), then print its state.",
    JobAction.RESUBMIT: "Submit a failed job again, then print its state.",
    DELETE: "Delete finished jobs on their servers (Orthanc 1.12.2 and later).",
}
_MANY = (
    "\n\nWith filters instead of an ID: every job they match, through POST /orthanc-jobs/actions: the count "
    "and the jobs refused first (--dry-run stops there), a confirmation (--yes for scripts), then a result "
    "per job. Exits 1 if a job was refused or its server did not answer."
)


def _action_command(action: str) -> Callable[..., None]:
    def act(
        ctx: typer.Context,
        job_id: Annotated[
            str | None, typer.Argument(metavar="[ID]", help="The job's id (or filters).", show_default=False)
        ] = None,
        status: StatusOption = None,
        job_type: TypeOption = None,
        server: ServerOption = None,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Only count the jobs it would reach.")
        ] = False,
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for a confirmation.")] = False,
        as_json: JsonOption = False,
    ) -> None:
        where = JobFilter.of(status or [], job_type or [], server or [])
        if job_id is not None and where.params():
            raise CommandError("give a job's ID or filters, not both", 2)
        if job_id is None and not where.params():
            raise CommandError("give a job's ID, or filters (--status, --type, --server) for many jobs", 2)
        if job_id is not None and action != DELETE and not (dry_run or yes):
            job = client_of(ctx).act(job_id, action)
            make_console().print(Text.assemble(f"job {job_id}: ", state_text(job.get("State", ""))))
            return
        if job_id is not None:
            where = JobFilter.of(ids=[job_id])
        act_on_many(client_of(ctx), action, where, dry_run=dry_run, yes=yes, as_json=as_json)

    return act


for _action, _summary in _ACTIONS.items():
    commands.command(str(_action), help=_summary + _MANY, cls=ClientCommand)(_action_command(str(_action)))


@commands.command(cls=ClientCommand)
def download(
    ctx: typer.Context,
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
    bar = Progress(*columns, TimeRemainingColumn(), console=make_console(stderr=True), transient=True)
    task = bar.add_task(output.name, total=None, start=False)

    def progress(received: int, total: int | None) -> None:
        if not bar.live.is_started:
            bar.start()
            bar.start_task(task)
        bar.update(task, completed=received, total=total)

    try:
        size = client_of(ctx).download(job_id, output, key, progress)
    except OSError as error:
        raise CommandError(f"cannot write {output}: {error.strerror or error}") from None
    finally:
        if bar.live.is_started:
            bar.stop()
    make_console().print(f"saved {filesize.decimal(size)} to {output}")


@commands.command("servers", cls=ClientCommand)
def list_servers(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the cluster's Orthanc servers: Name, Status, Url, LastSeen, and their jobs by state."""
    servers = client_of(ctx).servers()
    if as_json:
        print_json(servers)
        return
    make_console().print(servers_table(servers))


@commands.command(cls=ClientCommand)
def watch(
    ctx: typer.Context,
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
    where = JobFilter.of(status or [], job_type or [], server or [])
    watch_jobs(client_of(ctx), where, limit, exit_after)

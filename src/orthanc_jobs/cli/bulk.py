"""One action on every job the filters match (``orthanc-jobs resubmit --status Failure ...``): the count
and the refusals first, a confirmation, then the run followed to its end with a result per job."""

import sys
import time
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from orthanc_jobs.cli.errors import CommandError
from orthanc_jobs.cli.render import make_console, print_json
from orthanc_jobs.client import JobFilter, JobsClient

# How often a run is asked how far it went.
FOLLOW_EVERY = 0.5


def _plan_lines(action: str, plan: dict[str, Any]) -> list[str]:
    first = f"{plan['Matching']} jobs match; {plan['Accepted']} would be sent '{action}'"
    lines = [f"{first}, {plan['Refused']} refused:" if plan["Refused"] else f"{first}."]
    lines += [f"  {reason['Count']} x {reason['Reason']}" for reason in plan["RefusedReasons"]]
    return lines


def act_on_many(
    client: JobsClient,
    action: str,
    where: JobFilter,
    *,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """The dry run, then (unless ``dry_run``) the run, confirmed by the count unless ``yes``. Exits 1 if a
    job was refused or its owner did not answer."""
    console = make_console()
    plan = client.act_on_many(action, where, dry_run=True)
    if dry_run:
        if as_json:
            print_json(plan)
        else:
            console.print("\n".join(_plan_lines(action, plan)))
        return
    if not plan["Accepted"]:
        if not as_json:
            console.print("\n".join(_plan_lines(action, plan)))
        raise CommandError(f"no job to {action}")
    if not yes:
        if not sys.stdin.isatty():
            raise CommandError(f"{plan['Accepted']} jobs would be sent '{action}': confirm with --yes", 2)
        console.print("\n".join(_plan_lines(action, plan)))
        if not typer.confirm(f"{action.capitalize()} {plan['Accepted']} jobs?", default=False):
            raise CommandError("nothing done", 1)
    started = client.act_on_many(action, where, expected=plan["Accepted"])
    progress = Progress(
        TextColumn(action),
        BarColumn(),
        MofNCompleteColumn(),
        console=make_console(stderr=True),
        transient=True,
    )
    with progress:
        bar = progress.add_task(action, total=started["Accepted"])
        while True:
            state = client.action_progress(started["Path"])
            progress.update(bar, completed=state["Processed"])
            if state["State"] != "Running":
                break
            time.sleep(FOLLOW_EVERY)
    if as_json:
        print_json(state)
    else:
        _print_outcome(action, state)
    failed = state["Refused"] + state["Unreachable"]
    if failed:
        raise CommandError(f"{failed} of {state['Total']} jobs were not sent '{action}' (above)", 1)


def _print_outcome(action: str, state: dict[str, Any]) -> None:
    console = make_console()
    console.print(
        f"{action}: {state['Done']} done, {state['Refused']} refused, "
        f"{state['Unreachable']} owner unreachable ({state['State'].lower()})"
    )
    missed = [result for result in state["Results"] if result["Result"] != "done"]
    if missed:
        table = Table("ID", "Result", "Reason")
        for result in missed:
            table.add_row(result["ID"], result["Result"], result["Reason"])
        console.print(table)

"""How a command fails: the one place where a failure becomes one line on stderr and an exit code.

Each failure carries its exit code: :class:`CommandError` (the command line's own), the client's
:class:`~orthanc_jobs.client.errors.ClientError` tree; a ``ClusterError`` of the local cluster is 1.
Usage errors (2) are Click's (as Typer carries it), shown by Typer.
"""

from typing import Any

import typer
from typer.core import TyperGroup

from orthanc_jobs.client import BadCredentials, ClientError
from orthanc_jobs.cluster.launcher import ClusterError

__all__ = ["EXIT_CODES", "CommandError", "ErrorReportingGroup"]

EXIT_CODES = (
    "Exit codes: 0 done; 1 the API answered an error (unknown job, refused action...); 2 usage error; "
    "3 the job-service is unreachable; 4 the cluster refused the credentials."
)
_CREDENTIALS_HINT = "use --user/--password or ORTHANC_JOBS_CLI_USER/ORTHANC_JOBS_CLI_PASSWORD"


class CommandError(Exception):
    """A failure of the command line itself (a missing secret, a file it cannot write...)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def _message(error: CommandError | ClientError) -> str:
    if isinstance(error, BadCredentials):
        refused = "refused these" if error.credentials_sent else "needs"
        return f"the cluster {refused} credentials ({_CREDENTIALS_HINT})"
    return error.message


def _report(message: str, exit_code: int) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(exit_code)


class ErrorReportingGroup(TyperGroup):
    """The root command: whatever subcommand fails, its failure is shown here and becomes the exit code."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]  # Typer makes every context one
        try:
            return super().invoke(ctx)
        except (CommandError, ClientError) as error:
            raise _report(_message(error), error.exit_code) from None
        except ClusterError as error:
            raise _report(str(error), 1) from None

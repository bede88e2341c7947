"""The ``orthanc-jobs`` command: the job-service (:mod:`.serve`), the local cluster and the demo
(:mod:`.cluster`), and the cluster's jobs through the public API (:mod:`.jobs`, drawn by :mod:`.render`,
followed live by :mod:`.watch`). Failures are shown, and become exit codes, in :mod:`.errors`."""

import typer

from orthanc_jobs.cli import cluster, jobs, serve
from orthanc_jobs.cli.errors import ErrorReportingGroup

__all__ = ["app", "main"]

app = typer.Typer(
    cls=ErrorReportingGroup,
    help="Cluster-wide Orthanc jobs: the job-service and a local cluster.",
    no_args_is_help=True,
)
# In the order of --help.
app.add_typer(serve.commands)
app.add_typer(cluster.commands)
app.add_typer(jobs.commands)
app.add_typer(cluster.cluster_app, name="cluster")


def main() -> None:
    app()

"""The connection options that every API command takes (--url, --orthanc-path, --user, --password), and
:class:`ClientCommand`, which adds them to a command and runs it with a :class:`JobsClient` as ``ctx.obj``.

The root context's object, when the caller gives one (``CliRunner().invoke(app, args, obj=transport)``), is
the ``httpx.BaseTransport`` the clients use instead of the network.
"""

import os
from typing import Annotated, Any

import httpx
import typer
from typer.core import TyperCommand

from orthanc_jobs.cli.errors import EXIT_CODES
from orthanc_jobs.client import DEFAULT_ORTHANC_PATH, DEFAULT_URL, JobsClient

__all__ = ["ClientCommand", "client_of"]


def _check_url(value: str) -> str:
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as error:
        raise typer.BadParameter(f"{value!r}: {error}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise typer.BadParameter(f"{value!r} is not an http:// or https:// URL")
    return value


_CONNECTION_PANEL = "Connection"
# Read here rather than by click, which takes an empty variable for an unset one: "" means the root.
_ORTHANC_PATH_VARIABLE = "ORTHANC_JOBS_CLI_ORTHANC_PATH"


def _connection_options(
    url: Annotated[
        str,
        typer.Option(
            "--url",
            envvar="ORTHANC_JOBS_CLI_URL",
            callback=_check_url,
            rich_help_panel=_CONNECTION_PANEL,
            help="The load balancer's root URL.",
        ),
    ] = DEFAULT_URL,
    orthanc_path: Annotated[
        str | None,
        typer.Option(
            "--orthanc-path",
            show_default=False,
            rich_help_panel=_CONNECTION_PANEL,
            help=f'Where Orthanc\'s REST API is under the URL, "" or / when at the root. '
            f"(env var: {_ORTHANC_PATH_VARIABLE}; default: {DEFAULT_ORTHANC_PATH})",
        ),
    ] = None,
    user: Annotated[
        str | None,
        typer.Option("--user", envvar="ORTHANC_JOBS_CLI_USER", rich_help_panel=_CONNECTION_PANEL),
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(
            "--password",
            envvar="ORTHANC_JOBS_CLI_PASSWORD",
            show_default=False,
            rich_help_panel=_CONNECTION_PANEL,
        ),
    ] = None,
) -> None:
    """The connection options, declared once as Typer declares options; ClientCommand takes them from here."""


_declaration = typer.Typer(add_completion=False)
_declaration.command()(_connection_options)
_CONNECTION_OPTIONS = typer.main.get_command(_declaration).params
_CONNECTION_NAMES = ("url", "orthanc_path", "user", "password")


class ClientCommand(TyperCommand):
    """A command of the public API: its own parameters, then the connection options; it runs with a
    :class:`JobsClient` made from them as ``ctx.obj`` (see :func:`client_of`), closed when it ends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params = [*self.params, *_CONNECTION_OPTIONS]
        self.epilog = self.epilog or EXIT_CODES

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]  # Typer makes every context one
        url, orthanc_path, user, password = (ctx.params.pop(name) for name in _CONNECTION_NAMES)
        if password and not user:
            raise typer.BadParameter("a password needs a user (--user)", ctx=ctx, param_hint="'--password'")
        if orthanc_path is None:
            orthanc_path = os.environ.get(_ORTHANC_PATH_VARIABLE, DEFAULT_ORTHANC_PATH)
        transport = ctx.find_object(httpx.BaseTransport)
        with JobsClient(url, orthanc_path, user, password, transport=transport) as client:
            ctx.obj = client
            return super().invoke(ctx)


def client_of(ctx: typer.Context) -> JobsClient:
    """The client of a :class:`ClientCommand`'s context."""
    client = ctx.obj
    assert isinstance(client, JobsClient), "a command of the public API is a ClientCommand"
    return client

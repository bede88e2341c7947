"""Running the command line in-process against an httpx mock transport: the root context's object is the
transport the commands' clients use."""

from collections.abc import Callable

import httpx
from typer.testing import CliRunner, Result

from orthanc_jobs import cli
from tests.unit.client.fakes import URL


def run(handler: Callable[[httpx.Request], httpx.Response], *args: str) -> Result:
    """A command of the public API, with the test's URL and credentials."""
    arguments = [*args, "--url", URL, "--user", "demo", "--password", "demo"]
    return CliRunner().invoke(cli.app, arguments, obj=httpx.MockTransport(handler))

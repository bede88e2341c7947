"""``orthanc-jobs serve``: the job-service itself."""

import gc
import logging
from typing import Annotated

import typer

from orthanc_jobs.cli.errors import CommandError

commands = typer.Typer()


@commands.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (ORTHANC_JOBS_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (ORTHANC_JOBS_PORT).")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Run the job-service (settings from ORTHANC_JOBS_* environment variables)."""
    import uvicorn

    from orthanc_jobs.api.app import create_app
    from orthanc_jobs.api.http_server import JobServiceServer, uvicorn_options
    from orthanc_jobs.config import Settings
    from orthanc_jobs.core.webhooks import WebhookConfigError

    settings = Settings()
    if host is not None:
        settings.host = host
    if port is not None:
        settings.port = port
    if not settings.secret.get_secret_value():
        raise CommandError("the job-service needs a shared secret: set ORTHANC_JOBS_SECRET", exit_code=2)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Loading the history makes many objects that live as long as the process: no collection while they
    # are made, and none scans them afterwards (with 100,000 jobs a full collection took about 50 ms, a
    # pause of every request in progress).
    gc.disable()
    try:
        app = create_app(settings)
    except WebhookConfigError as error:
        raise CommandError(f"webhooks: {error}", exit_code=2) from None
    finally:
        gc.enable()
    gc.freeze()
    config = uvicorn.Config(
        app,
        **uvicorn_options(
            settings.max_connections,
            settings.header_timeout,
            app.answer_at_once,
        ),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=False,
        server_header=False,
        # Requests still running when the service stops get this long to finish.
        timeout_graceful_shutdown=3,
    )
    JobServiceServer(config, on_stop=app.state.services.events.close_all).run()

"""What the job-service answers, for the tests of the client and of the command line (httpx mock
transports stand in for the network)."""

from collections.abc import Callable
from typing import Any

import httpx

from orthanc_jobs.client import JobsClient

URL = "http://lb.test"
JOB = "6f1c1d5e-8f0b-4d2b-9a55-3d0f6b0c1a11"


def job(job_id: str, state: str = "Running", created: str = "20250101T000000.000000", **more: Any) -> dict:
    server = {"Name": "orthanc-1", "Url": "http://o1", "Status": "alive", "HistoryOnly": False}
    return {
        "ID": job_id,
        "State": state,
        "Type": "Archive",
        "CreationTime": created,
        "Server": server,
        **more,
    }


def client_for(handler: Callable[[httpx.Request], httpx.Response], **options: Any) -> JobsClient:
    return JobsClient(URL, user="demo", password="demo", transport=httpx.MockTransport(handler), **options)


def orthanc_error(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"HttpStatus": status, "Message": message})


def sse(text: str) -> httpx.Response:
    return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=text.encode())

"""What browsers need to be told: no cross-site request changes a job, no answer is framed, sniffed, or
allowed to load anything from elsewhere.

A page of another site, in a browser holding the cluster's credentials (Basic authentication is sent by the
browser by itself), could cancel a job with a plain form POST; a single Orthanc lets it. Browsers say where
a request comes from (``Sec-Fetch-Site``, ``Origin``); scripts and Orthanc's clients send neither, and are
let through.
"""

from urllib.parse import urlsplit

from fastapi import Request
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orthanc_jobs.core.errors import Forbidden

# The dashboard loads its own script, style and data, nothing else; JSON and files load nothing at all.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
DATA_POLICY = "default-src 'none'; frame-ancestors 'none'; sandbox"
# What every answer says besides its policy.
FIXED_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
)
# The same for a JSON answer, as ASGI header pairs (the short path of job reads writes them itself).
JSON_ANSWER_HEADERS = [
    (name.lower().encode(), value.encode())
    for name, value in (("Content-Security-Policy", DATA_POLICY), *FIXED_HEADERS)
]


def refuse_cross_site(request: Request) -> None:
    """Refuse a state-changing request that a browser made for a page of another site."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        if site not in ("same-origin", "none"):  # "none": typed by the user, not sent by a page
            raise Forbidden(f"a request from another site may not change a job (Sec-Fetch-Site: {site})")
        return
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower():
        raise Forbidden(f"a request from another site may not change a job (Origin: {origin[:200]})")


class SecurityHeaders:
    """Adds to every answer: its Content-Security-Policy, no MIME sniffing, no framing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                page = headers.get("content-type", "").startswith("text/html")
                headers["Content-Security-Policy"] = PAGE_POLICY if page else DATA_POLICY
                for name, value in FIXED_HEADERS:
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)

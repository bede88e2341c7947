"""Who may call what: cluster credentials for public routes, the shared secret for the plugin's routes."""

import hashlib
import hmac
import itertools
import time

from fastapi import Request

from orthanc_jobs.errors import Forbidden, HeaderTooLarge, ServerUnavailable, Unauthorized
from orthanc_jobs.model import normalize_server_url, plugin_secret_for
from orthanc_jobs.orthanc import OrthancClient, OrthancUnreachable
from orthanc_jobs.registry import Registry

# The header in which a plugin names the server it speaks for (the URL it registers with).
SERVER_HEADER = "x-orthanc-jobs-server"
# Accepted credentials kept at most; past that the cache starts again empty.
_CACHE_LIMIT = 10_000
# Larger Authorization headers are refused without asking any Orthanc (nginx takes 8 KiB per header line).
MAX_AUTHORIZATION_BYTES = 8192


class ClusterAuthenticator:
    """Accepts a public request only if a live Orthanc of the cluster accepts the same credentials."""

    def __init__(
        self, registry: Registry, client: OrthancClient, cache_seconds: float, check_timeout: float
    ) -> None:
        self._registry = registry
        self._client = client
        self._cache_seconds = cache_seconds
        # A server frozen but not yet found silent (SIGSTOP, a stalled machine) costs a caller this much,
        # then the next server is asked.
        self._check_timeout = check_timeout
        self._accepted_until: dict[bytes, float] = {}
        self._rotation = itertools.count()

    async def check(self, authorization: str | None) -> None:
        if authorization is not None and len(authorization) > MAX_AUTHORIZATION_BYTES:
            raise HeaderTooLarge(f"the Authorization header is over {MAX_AUTHORIZATION_BYTES} bytes")
        key = hashlib.sha256((authorization or "").encode()).digest()
        now = time.monotonic()
        if self._accepted_until.get(key, 0.0) > now:
            return
        servers = self._registry.live_servers()
        if not servers:
            raise ServerUnavailable("no live Orthanc server to check the credentials against")
        start = next(self._rotation)
        for offset in range(len(servers)):
            server = servers[(start + offset) % len(servers)]
            try:
                accepted = await self._client.credentials_accepted(server, authorization, self._check_timeout)
            except OrthancUnreachable:
                continue
            if not accepted:
                self._accepted_until.pop(key, None)
                raise Unauthorized("the Orthanc servers of the cluster refuse these credentials")
            if len(self._accepted_until) >= _CACHE_LIMIT:
                self._accepted_until.clear()
            self._accepted_until[key] = now + self._cache_seconds
            return
        raise ServerUnavailable("no Orthanc server answered the credentials check")


class PluginSecret:
    """Checks the plugins' ``Authorization: Bearer <the secret of their server's URL>``."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("the job-service needs a shared secret (ORTHANC_JOBS_SECRET)")
        self._secret = secret

    def check(self, request: Request) -> str:
        """The normalised URL of the server the request speaks for, once its secret is checked."""
        given = request.headers.get("authorization")
        if not given:
            raise Unauthorized("the internal API needs the server's secret")
        claimed = request.headers.get(SERVER_HEADER)
        if not claimed:
            raise Forbidden(f"a plugin names its server ({SERVER_HEADER}): update the reporter plugin")
        try:
            url = normalize_server_url(claimed)
        except ValueError:
            raise Forbidden(f"{SERVER_HEADER} is not a server's URL") from None
        expected = "Bearer " + plugin_secret_for(self._secret, url)
        if not hmac.compare_digest(given.encode(errors="replace"), expected.encode()):
            raise Forbidden(f"wrong secret for {url}")
        return url

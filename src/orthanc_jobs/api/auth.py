"""Who may call what: cluster credentials for public routes, the shared secret for the plugin's routes."""

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import Callable

from fastapi import Request

from orthanc_jobs.core.background import SharedRuns
from orthanc_jobs.core.errors import Forbidden, HeaderTooLarge, ServerUnavailable, Unauthorized
from orthanc_jobs.core.model import Server, normalize_server_url, plugin_secret_for
from orthanc_jobs.core.orthanc import OrthancClient, OrthancError
from orthanc_jobs.core.registry import Registry

log = logging.getLogger(__name__)

# The header in which a plugin names the server it speaks for (the URL it registers with).
SERVER_HEADER = "x-orthanc-jobs-server"
# Answers kept at most (of each kind, accepted and refused); past that the cache starts again empty.
_CACHE_LIMIT = 10_000
# Larger Authorization headers are refused without asking any Orthanc (nginx takes 8 KiB per header line).
MAX_AUTHORIZATION_BYTES = 8192
# Credentials checks under way at once on one server; the others wait (within the check's timeout).
CHECKS_AT_ONCE = 16
# How often an open stream's credentials are asked again when nothing is cached (auth_cache_seconds 0).
UNCACHED_RECHECK_SECONDS = 1.0
# While no server can answer a check (their index database away: Orthanc answers nothing then), credentials
# the servers accepted this recently are still accepted, so that reads go on; a refusal is never forgotten.
UNANSWERED_GRACE_SECONDS = 300.0
# Credentials used in the last part of their acceptance's life are asked of the servers again in the
# background, so that a client that keeps calling never waits for a round of questions (with hundreds of
# servers one takes about a second); what is answered meanwhile was still accepted less than
# ``cache_seconds`` ago.
REFRESH_AHEAD_FRACTION = 0.2
# Servers asked at once by those rounds (with hundreds of servers, all at once would hold the event loop and
# the requests behind it for as long as the round takes).
UNHURRIED_AT_ONCE = 16


class ClusterAuthenticator:
    """Accepts a public request only if the live Orthanc servers of the cluster accept the same credentials.

    Every live server is asked at once: one refusal refuses (a password revoked on one server is revoked),
    and the answer is the same whichever server a round-robin would have picked. Both answers are kept
    ``cache_seconds``, counted from when the servers were asked; a refusal seen at any time replaces an
    acceptance at once and ends the event streams opened with those credentials (``watch``).
    """

    def __init__(
        self,
        registry: Registry,
        client: OrthancClient,
        cache_seconds: float,
        check_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._client = client
        self._cache_seconds = cache_seconds
        # A server frozen but not yet found silent (SIGSTOP, a stalled machine) costs a check this much; its
        # silence then counts for nothing.
        self._check_timeout = check_timeout
        self._clock = clock
        self._accepted_until: dict[bytes, float] = {}
        self._refused_until: dict[bytes, float] = {}
        self._accepted_at: dict[bytes, float] = {}  # the last acceptance, for when nobody answers
        # The round of questions under way for a header: concurrent checks of it share one.
        self._rounds: SharedRuns[bool | None] = SharedRuns()
        # Headers asked again in the background (refresh ahead), each with its task; the servers those
        # rounds ask at once, in all.
        self._refreshing: dict[bytes, asyncio.Task[None]] = {}
        self._unhurried = asyncio.Semaphore(UNHURRIED_AT_ONCE)
        # Checks at once per server (server URL -> its places): a flood of passwords never seen before,
        # each asked of every server, holds at most this many of the connections to each.
        self._gates: dict[str, asyncio.Semaphore] = {}
        # What to call when a header is refused: one entry per open event stream.
        self._on_refusal: dict[bytes, set[Callable[[], None]]] = {}

    @property
    def recheck_seconds(self) -> float:
        """How often an open stream's credentials are asked of the servers again."""
        return self._cache_seconds or UNCACHED_RECHECK_SECONDS

    async def check(self, authorization: str | None, fresh: bool = False) -> None:
        """Raise unless the cluster accepts these credentials; ``fresh``: ask the servers even if an
        acceptance is cached (a cached refusal still stands)."""
        if authorization is not None and len(authorization) > MAX_AUTHORIZATION_BYTES:
            raise HeaderTooLarge(f"the Authorization header is over {MAX_AUTHORIZATION_BYTES} bytes")
        key = _key(authorization)
        now = self._clock()
        if self._refused_until.get(key, 0.0) > now:
            raise _refused(authorization)
        accepted_until = self._accepted_until.get(key, 0.0)
        if not fresh and accepted_until > now:
            self._refresh_if_ending(key, authorization, accepted_until - now)
            return
        try:
            accepted = await self._rounds.run(key, lambda: self._ask_every_server(key, authorization))
            if accepted is None:
                raise ServerUnavailable("no Orthanc server answered the credentials check")
        except ChecksBusy:
            raise
        except ServerUnavailable:
            # No live server, or none can answer: what they accepted a short while ago still reads (not when
            # the operator asked for every request to be checked: ORTHANC_JOBS_AUTH_CACHE_SECONDS=0).
            accepted_at = self._accepted_at.get(key)
            if (
                self._cache_seconds > 0
                and accepted_at is not None
                and self._clock() - accepted_at < UNANSWERED_GRACE_SECONDS
            ):
                return
            raise
        if not accepted:
            raise _refused(authorization)

    def accepted_now(self, authorization: str | None) -> bool:
        """Whether ``check`` would accept these credentials without asking anyone (cached, not refused)."""
        if authorization is not None and len(authorization) > MAX_AUTHORIZATION_BYTES:
            return False
        key = _key(authorization)
        now = self._clock()
        left = self._accepted_until.get(key, 0.0) - now
        if left <= 0 or self._refused_until.get(key, 0.0) > now:
            return False
        self._refresh_if_ending(key, authorization, left)
        return True

    def _refresh_if_ending(self, key: bytes, authorization: str | None, left: float) -> None:
        if left >= REFRESH_AHEAD_FRACTION * self._cache_seconds or key in self._refreshing:
            return
        task = asyncio.get_running_loop().create_task(self._refresh(key, authorization))
        self._refreshing[key] = task
        task.add_done_callback(lambda _: self._refreshing.pop(key, None))

    async def _refresh(self, key: bytes, authorization: str | None) -> None:
        try:
            await self._rounds.run(key, lambda: self._ask_every_server(key, authorization, self._unhurried))
        except ServerUnavailable as error:
            # Nothing learnt: the acceptance ends when it ends, and the next request asks for itself.
            log.debug("credentials asked again ahead of time, no answer: %s", error)
        except Exception:  # a background task: nothing else would see it
            log.exception("credentials asked again ahead of time")

    def seconds_trusted(self, authorization: str | None) -> float:
        """How long a cached acceptance of these credentials still lasts (0 or less: none)."""
        return self._accepted_until.get(_key(authorization), 0.0) - self._clock()

    def watch(self, authorization: str | None, on_refusal: Callable[[], None]) -> "CredentialsWatch":
        """Keep checking the credentials of a long request (an event stream), until ``stop()``."""
        watch = CredentialsWatch(self, authorization, on_refusal)
        watch.start()
        return watch

    def _listen(self, authorization: str | None, on_refusal: Callable[[], None]) -> None:
        self._on_refusal.setdefault(_key(authorization), set()).add(on_refusal)

    def _stop_listening(self, authorization: str | None, on_refusal: Callable[[], None]) -> None:
        key = _key(authorization)
        callbacks = self._on_refusal.get(key, set())
        callbacks.discard(on_refusal)
        if not callbacks:
            self._on_refusal.pop(key, None)

    async def _ask_every_server(
        self, key: bytes, authorization: str | None, gate: asyncio.Semaphore | None = None
    ) -> bool | None:
        """True: accepted by every server that answered; False: refused by one; None: nobody answered.
        ``gate``: servers asked at once at most (a round nobody waits for: others' requests come first)."""
        servers = self._registry.live_servers()
        if not servers:
            raise ServerUnavailable("no live Orthanc server to check the credentials against")
        asked_at = self._clock()

        waited_for_a_place = False

        async def ask(server: Server) -> bool | None:
            nonlocal waited_for_a_place
            server_gate = self._gates.get(server.url)
            if server_gate is None:
                server_gate = self._gates[server.url] = asyncio.Semaphore(CHECKS_AT_ONCE)
            asked = False
            async with gate if gate is not None else contextlib.nullcontext():
                try:
                    # The wait for a place counts: a flood of new passwords gets no more of a server's time.
                    async with asyncio.timeout(self._check_timeout), server_gate:
                        asked = True
                        return await self._client.credentials_accepted(
                            server, authorization, self._check_timeout
                        )
                except (OrthancError, TimeoutError):
                    waited_for_a_place = waited_for_a_place or not asked
                    return None

        answers = await asyncio.gather(*(ask(server) for server in servers))
        if False in answers:
            self._accepted_until.pop(key, None)
            self._accepted_at.pop(key, None)
            _remember(self._refused_until, key, asked_at + self._cache_seconds)
            for callback in list(self._on_refusal.get(key, ())):
                callback()
            return False
        if True in answers:
            self._refused_until.pop(key, None)
            _remember(self._accepted_until, key, asked_at + self._cache_seconds)
            _remember(self._accepted_at, key, asked_at)
            return True
        if waited_for_a_place:
            # Not the servers' silence: checks queued behind others (a flood of passwords) grant nothing.
            raise ChecksBusy("the Orthanc servers are busy with other credentials checks: try again")
        return None


class ChecksBusy(ServerUnavailable):
    """No server could be asked in time: every place for checks was taken."""


class CredentialsWatch:
    """The credentials of an open event stream, while it lasts: asked of the servers again every
    ``recheck_seconds``, the first time when the acceptance that let the stream in runs out. ``on_refusal``
    (end the stream) is called when a re-check, or any other check of the same header, is refused; nobody
    answering is no refusal."""

    def __init__(
        self, authenticator: ClusterAuthenticator, authorization: str | None, on_refusal: Callable[[], None]
    ) -> None:
        self._authenticator = authenticator
        self._authorization = authorization
        self._on_refusal = on_refusal
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._authenticator._listen(self._authorization, self._on_refusal)
        self._task = asyncio.ensure_future(self._recheck())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._authenticator._stop_listening(self._authorization, self._on_refusal)

    async def _recheck(self) -> None:
        authenticator = self._authenticator
        # At once if a refusal came between the stream's admission and now (nothing is trusted then).
        wait = authenticator.seconds_trusted(self._authorization)
        while True:
            await asyncio.sleep(max(wait, 0.0))
            try:
                await authenticator.check(self._authorization, fresh=True)
            except Unauthorized:
                self._on_refusal()
                return
            except ServerUnavailable:
                pass  # nobody could say: the stream stays open until a server refuses
            wait = authenticator.recheck_seconds


class PluginSecret:
    """Checks the plugins' ``Authorization: Bearer <the secret of their server's URL>``."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("the job-service needs a shared secret (ORTHANC_JOBS_SECRET)")
        self._secret = secret

    def check(self, request: Request) -> str:
        """The normalised URL of the server the request speaks for, once its secret is checked."""
        return self.check_headers(request.headers.get("authorization"), request.headers.get(SERVER_HEADER))

    def check_headers(self, given: str | None, claimed: str | None) -> str:
        """``check``, from the values of the request's two headers."""
        if not given:
            raise Unauthorized("the internal API needs the server's secret")
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


def _refused(authorization: str | None) -> Unauthorized:
    if not authorization:
        return Unauthorized("the Orthanc servers of the cluster need credentials")
    return Unauthorized("the Orthanc servers of the cluster refuse these credentials")


def _key(authorization: str | None) -> bytes:
    return hashlib.sha256((authorization or "").encode()).digest()


def _remember(cache: dict[bytes, float], key: bytes, until: float) -> None:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = until

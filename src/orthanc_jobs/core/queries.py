"""Which server keeps each query handle.

Orthanc keeps a query (``POST /modalities/{name}/query``: a C-FIND and its answers) in the memory of the
process that ran it, for its last ``QueryRetrieveSize`` queries (100 by default); every follow-up request
(``/queries/{id}/answers``, ``/queries/{id}/retrieve``...) must go to that process. A handle is found the
first time by asking the live servers, in the same shared rounds as unknown job ids, then remembered for as
long as its server's process lives.
"""

import asyncio
from collections import OrderedDict

from prometheus_client import Counter

from orthanc_jobs.core.background import SharedRuns
from orthanc_jobs.core.lookups import OneAtATime, RoundsPerServer
from orthanc_jobs.core.model import Server
from orthanc_jobs.core.orthanc import OrthancClient
from orthanc_jobs.core.registry import Registry

# Handles remembered at most (the oldest go first): 100 servers keeping Orthanc's default 100 queries.
REMEMBERED = 10_000


class QueryOwners:
    def __init__(
        self,
        registry: Registry,
        client: OrthancClient,
        *,
        timeout: float,
        rounds: Counter | None = None,
        remembered: int = REMEMBERED,
    ) -> None:
        self._registry = registry
        self._remembered = remembered
        self._owners: OrderedDict[str, tuple[str, str]] = OrderedDict()  # id -> (server URL, incarnation)
        self._lookups: SharedRuns[Server | None] = SharedRuns()
        self._rounds = RoundsPerServer(client.query_ids, timeout, rounds)
        self._unknown_answers = OneAtATime()

    def stop(self) -> None:
        self._rounds.cancel()

    def remember(self, query_id: str, server: Server) -> None:
        self._owners[query_id] = (server.url, server.incarnation)
        self._owners.move_to_end(query_id)
        while len(self._owners) > self._remembered:
            self._owners.popitem(last=False)

    def forget(self, query_id: str) -> None:
        self._owners.pop(query_id, None)

    def known_owner(self, query_id: str) -> Server | None:
        """The remembered owner, if its process still runs (a restarted server has lost its queries)."""
        known = self._owners.get(query_id)
        if known is None:
            return None
        server = self._registry.server_by_url(known[0])
        if server is None or server.incarnation != known[1]:
            del self._owners[query_id]
            return None
        self._owners.move_to_end(query_id)  # in use: the last to be forgotten
        return server

    async def find(self, query_id: str) -> Server | None:
        """The server whose process keeps this query, or None when no live server does."""
        owner = self.known_owner(query_id)
        if owner is not None:
            return owner
        owner = await self._lookups.run(query_id, lambda: self._ask_every_server(query_id))
        if owner is None:
            # A flood of unknown ids: their 404s go one per turn of the event loop (as for jobs).
            await self._unknown_answers.turn()
            return None
        self.remember(query_id, owner)
        return owner

    async def _ask_every_server(self, query_id: str) -> Server | None:
        servers = self._registry.live_servers()
        if not servers:
            return None
        for answer in asyncio.as_completed([self._holds(server, query_id) for server in servers]):
            server, held = await answer
            if held:
                return server
        return None

    async def _holds(self, server: Server, query_id: str) -> tuple[Server, bool]:
        return server, await self._rounds.of(server).holds(query_id)

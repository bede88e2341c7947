"""Background tasks of the service: started with it, cancelled when it stops, never dying silently."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def every(self, interval: float, step: Callable[[], Awaitable[None]]) -> None:
        """Run ``step`` every ``interval`` seconds; an error is logged and the loop goes on."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await step()
                except Exception:  # a loop that died would freeze what it keeps up to date
                    log.exception("background step %s failed", getattr(step, "__qualname__", step))

        self.spawn(loop())

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


class SharedRuns(Generic[T]):
    """Calls for the same key made while one is under way share it: one run, one answer for all (a new job
    polled by many clients at once, one password checked by many requests, probes that come together).

    Shielded: a caller that goes away does not cancel the run the others wait for. A run that has ended is
    never handed to a later caller, who starts a new one.
    """

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Future[T]] = {}

    async def run(self, key: Hashable, start: Callable[[], Coroutine[Any, Any, T]]) -> T:
        future = self._running.get(key)
        if future is None or future.done():
            future = self._running[key] = asyncio.ensure_future(start())
            future.add_done_callback(lambda done: self._forget(key, done))
        return await asyncio.shield(future)

    def _forget(self, key: Hashable, done: "asyncio.Future[T]") -> None:
        if self._running.get(key) is done:
            del self._running[key]

"""Background tasks of the service: started with it, cancelled when it stops, never dying silently."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


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

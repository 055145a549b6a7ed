"""Deliveries that outlive the request that caused them: bounded in number, never silently lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("rolegate.notify")


class Deliveries:
    """Background tasks (a webhook's retries, a mail) kept referenced until they end, at most ``limit`` at
    once: beyond that a new one is dropped with a WARNING rather than piling up behind a dead receiver."""

    def __init__(self, limit: int = 200) -> None:
        self.limit = limit
        self._running: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._running)

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> bool:
        if len(self._running) >= self.limit:
            coro.close()
            log.warning("%s: dropped, %d deliveries are still running", what, len(self._running))
            return False
        task = asyncio.ensure_future(coro)
        self._running.add(task)
        task.add_done_callback(lambda t: self._done(t, what))
        return True

    def _done(self, task: asyncio.Task[Any], what: str) -> None:
        self._running.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # a bug in a delivery: said once, without a traceback, and never a 500 anywhere
            log.warning("%s: failed unexpectedly: %s: %s", what, type(exc).__name__, exc)

    async def wait(self, timeout: float) -> None:
        """Let the running deliveries finish (tests, shutdown), at most ``timeout`` seconds."""
        if self._running:
            await asyncio.wait(set(self._running), timeout=timeout)

    def cancel(self) -> None:
        for task in list(self._running):
            task.cancel()

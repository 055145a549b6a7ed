"""Bounded retries with exponential back-off, shared by the webhook and the mailer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("rolegate.notify")


class DeliveryFailed(Exception):
    """One attempt failed; ``retry`` False when another attempt cannot help (the receiver refused it)."""

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


async def with_retries(
    attempt: Callable[[int], Awaitable[None]], *, attempts: int, backoff: float, max_backoff: float, what: str
) -> bool:
    """Run ``attempt(n)`` until it succeeds, at most ``attempts`` times, waiting ``backoff`` seconds after the
    first failure and twice as long after each next one (at most ``max_backoff``). True when delivered.

    Failures are WARNING lines naming ``what`` and why (never a traceback, never a secret)."""
    delay = backoff
    for n in range(1, attempts + 1):
        try:
            await attempt(n)
            return True
        except DeliveryFailed as exc:
            if not exc.retry:
                log.warning("%s: %s; not retried", what, exc)
                return False
            if n == attempts:
                log.warning("%s: attempt %d of %d failed (%s); giving up", what, n, attempts, exc)
                return False
            log.warning("%s: attempt %d of %d failed (%s); next in %gs", what, n, attempts, exc, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_backoff)
    return False

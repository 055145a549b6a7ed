"""Change notifications: publish/subscribe on named channels, and a counter watcher built on them.

With Redis (``storage.cache_url``) a message published on one instance reaches every instance. Without
it, publish only reaches subscribers in this process, and ``watch_counters`` polls the store instead.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from rolegate.store.base import StoreUnavailable

if TYPE_CHECKING:
    from rolegate.store.base import Store

# Every Store.incr on a store with shared notifications announces "name=value" here.
COUNTERS_CHANNEL = "counters"


class Subscription(abc.ABC):
    """Messages of one channel, in order: ``async with store.subscribe(ch) as sub: async for m in sub``.

    Iterating without ``async with`` subscribes on first use; ``async with`` (or ``await start()``)
    subscribes before the body runs, so nothing published after that point is missed.
    """

    _started = False
    _closed = False

    async def start(self) -> "Subscription":
        if not self._started:
            await self._start()
            self._started = True
        return self

    async def get(self, timeout: float | None = None) -> str | None:
        """The next message, or None when ``timeout`` seconds pass without one."""
        await self.start()
        return await self._get(timeout)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._started:
                await self._close()

    async def __aenter__(self) -> "Subscription":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        if self._closed:
            raise StopAsyncIteration
        while True:
            message = await self.get(timeout=None)
            if message is not None:
                return message

    @abc.abstractmethod
    async def _start(self) -> None: ...

    @abc.abstractmethod
    async def _get(self, timeout: float | None) -> str | None: ...

    @abc.abstractmethod
    async def _close(self) -> None: ...


class LocalBroker:
    """In-process fan-out: the fallback when there is no Redis."""

    __slots__ = ("_queues",)

    def __init__(self) -> None:
        self._queues: dict[str, set[asyncio.Queue[str]]] = {}

    def publish(self, channel: str, message: str) -> int:
        queues = self._queues.get(channel, ())
        for queue in queues:
            queue.put_nowait(message)
        return len(queues)

    def subscribe(self, channel: str) -> Subscription:
        return _LocalSubscription(self, channel)


class _LocalSubscription(Subscription):
    def __init__(self, broker: LocalBroker, channel: str) -> None:
        self._broker = broker
        self._channel = channel
        self._queue: asyncio.Queue[str] = asyncio.Queue()

    async def _start(self) -> None:
        self._broker._queues.setdefault(self._channel, set()).add(self._queue)

    async def _get(self, timeout: float | None) -> str | None:
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def _close(self) -> None:
        queues = self._broker._queues.get(self._channel)
        if queues is not None:
            queues.discard(self._queue)
            if not queues:
                del self._broker._queues[self._channel]


async def watch_counters(
    store: "Store", names: list[str], *, poll_interval: float = 1.0, shared_poll_interval: float = 30.0
) -> AsyncIterator[dict[str, int]]:
    """Yield the counters now, then again whenever one of them changes.

    With shared notifications a change arrives as a message (and a slow poll guards against a lost
    one); without them, or while Redis is unreachable, the store is polled every ``poll_interval``.
    Store outages are ridden out: the watcher keeps its last values and tries again.
    """
    last: dict[str, int] | None = None
    sub: Subscription | None = None
    try:
        while True:
            if sub is None and store.shared_notifications:
                candidate = store.subscribe(COUNTERS_CHANNEL)
                try:
                    # Subscribe before reading, so a bump between the two is not lost.
                    sub = await candidate.start()
                except StoreUnavailable:
                    await candidate.close()
            try:
                current = await store.counters(names)
            except StoreUnavailable:
                current = None
            if current is not None and current != last:
                last = current
                yield dict(current)
            if sub is None:
                await asyncio.sleep(poll_interval)
                continue
            try:
                await sub.get(timeout=shared_poll_interval)
            except StoreUnavailable:
                await sub.close()
                sub = None
                await asyncio.sleep(poll_interval)
    finally:
        if sub is not None:
            await sub.close()

"""A bounded HTTP/1.1 load for fault tests, with every request's fate recorded exactly.

Plain asyncio streams, no client library: nothing retries behind the test's back (aiohttp's client
silently repeats an idempotent request once when a reused connection drops), so a request the
server took and then dropped shows up as ``lost``. Fates:

- ``ok``: a complete response (any status; ``status`` says which);
- ``refused``: the connection was never established (refused, or the SYN went unanswered): the
  request was not sent, which is what a stopped server must answer;
- ``lost``: the request was sent and the connection ended (reset, end-of-file, timeout) before a
  complete response. A fault test asserts there is none where there must be none.

Also: which worker answers a fresh connection (``answering_pid``, through ``tests.support.workers``:
the kernel's socket tables), so a test tells workers apart without the server exposing anything.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from tests.support.workers import owner_of

CONNECT_TIMEOUT = 10.0
RESPONSE_TIMEOUT = 20.0


@dataclass
class Result:
    started: float  # time.monotonic() when the request was about to be sent
    fate: str  # pending (still in flight) | ok | refused | lost
    status: int | None = None
    reused: bool = False  # sent on a connection that had already answered
    detail: str = ""


@dataclass
class Load:
    """``clients`` keep-alive loops and ``fresh`` one-connection-per-request loops against ``path``."""

    port: int
    path: str = "/public/load"
    clients: int = 8
    fresh: int = 4
    duration: float = 30.0
    results: list[Result] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self) -> None:
        deadline = time.monotonic() + self.duration
        self._tasks = [
            asyncio.ensure_future(self._client(i, keep_alive=True, deadline=deadline)) for i in range(self.clients)
        ]
        self._tasks += [
            asyncio.ensure_future(self._client(i, keep_alive=False, deadline=deadline)) for i in range(self.fresh)
        ]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def finished(self) -> None:
        """Until every client has stopped (each stops at its first refusal, at ``stop()`` or at the deadline)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def fates(self, since: float = 0.0) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            if r.started >= since:
                out[r.fate] = out.get(r.fate, 0) + 1
        return out

    def lost(self, since: float = 0.0) -> list[Result]:
        return [r for r in self.results if r.fate == "lost" and r.started >= since]

    async def _client(self, n: int, *, keep_alive: bool, deadline: float) -> None:
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        answered = 0
        i = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            i += 1
            if conn is None:
                try:
                    conn = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), CONNECT_TIMEOUT)
                except (OSError, asyncio.TimeoutError) as exc:
                    self.results.append(Result(time.monotonic(), "refused", detail=type(exc).__name__))
                    return  # the server is gone: this client is done
                answered = 0
            reader, writer = conn
            result = Result(time.monotonic(), "pending", reused=answered > 0)
            self.results.append(result)
            try:
                status, headers = await asyncio.wait_for(
                    exchange(reader, writer, f"{self.path}?c={n}&i={i}", close=not keep_alive), RESPONSE_TIMEOUT
                )
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as exc:
                result.fate, result.detail = "lost", f"{type(exc).__name__}: {exc}"
                _abort(writer)
                conn = None
                continue
            result.fate, result.status = "ok", status
            answered += 1
            if not keep_alive or headers.get("connection", "").lower() == "close":
                _abort(writer)
                conn = None
        if conn is not None:
            _abort(conn[1])


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str, *, close: bool = False
) -> tuple[int, dict[str, str]]:
    """Send one GET and read its complete response: (status, lower-cased headers)."""
    writer.write(
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n".encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    return status, headers


def _abort(writer: asyncio.StreamWriter) -> None:
    try:
        writer.close()
    except OSError:
        pass


# -- which process answered ------------------------------------------------------------------------------------


async def answering_pid(port: int, pids: list[int], path: str = "/public/who") -> tuple[int, int | None]:
    """On a FRESH connection, one GET: (status, the pid among ``pids`` that holds the server's end)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), CONNECT_TIMEOUT)
    try:
        status, _headers = await asyncio.wait_for(exchange(reader, writer, path), RESPONSE_TIMEOUT)
        # Kept alive by the server, so its socket is still among the worker's file descriptors.
        return status, owner_of(writer.get_extra_info("sockname")[1], pids, port)
    finally:
        _abort(writer)

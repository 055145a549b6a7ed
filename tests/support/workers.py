"""Which worker answered: requests over fresh connections, each traced to the worker process that owns the
server side of its socket (read from /proc, as ``ss -p`` does).

A loop of requests over one keep-alive connection always reaches the same worker, so "every worker sees the
change" must be shown this way: each request on its own connection, and the answering worker named.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from urllib.parse import urlsplit

import aiohttp
from yarl import URL


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _inode_of_connection_from(client_port: int, server_port: int | None = None) -> str | None:
    """The inode of the server-side socket whose peer is 127.0.0.1:``client_port`` (and whose own port is
    ``server_port``). Only open connections count: a closed one (TIME_WAIT, inode 0) that once had the same
    peer port, or another server's client that happens to use that number as its server port, is not it."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if (
                remote_port == client_port
                and fields[3] == "01"
                and fields[9] != "0"
                and (server_port is None or local_port == server_port)
            ):
                return fields[9]
    return None


def owner_of(client_port: int, worker_pids: list[int], server_port: int | None = None) -> int | None:
    inode = _inode_of_connection_from(client_port, server_port)
    if inode is None:
        return None
    for pid in worker_pids:
        try:
            if inode in _socket_inodes(pid):
                return pid
        except OSError:
            continue
    return None


async def _ask(url: str, method: str, headers: dict[str, str], workers: list[int]) -> tuple[int | None, int]:
    """One request on its own keep-alive connection; (the worker holding it once it answered, status)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [
            f"{method} {target} HTTP/1.1",
            f"Host: {parts.netloc}",
            "Content-Length: 0",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 15)
        # The server keeps the connection open (keep-alive), so its socket is still in the worker's fds.
        pid = owner_of(writer.get_extra_info("sockname")[1], workers, writer.get_extra_info("peername")[1])
        return pid, int(status_line.split()[1])
    finally:
        writer.close()


async def on_every_worker(
    proc,
    http: aiohttp.ClientSession | None,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    each: int = 2,
    attempts: int = 80,
) -> list[tuple[int, int]]:
    """Send ``method url`` on fresh connections (with ``http``'s cookies) until every worker of ``proc``
    has answered ``each`` times; returns every (worker pid, status) seen. Fails when a worker is never
    reached within ``attempts`` requests (the kernel spreads new connections over SO_REUSEPORT sockets)."""
    workers = proc.worker_pids()
    assert workers, "no worker processes"
    headers = dict(headers or {})
    if http is not None:
        cookies = http.cookie_jar.filter_cookies(URL(url))
        if cookies:
            headers["Cookie"] = "; ".join(f"{k}={m.value}" for k, m in cookies.items())
    seen: list[tuple[int, int]] = []
    counts: Counter[int] = Counter()
    for _ in range(attempts):
        pid, status = await _ask(url, method, headers, workers)
        assert pid is not None, "no worker holds the connection"
        seen.append((pid, status))
        counts[pid] += 1
        if all(counts[w] >= each for w in workers):
            return seen
    raise AssertionError(f"not every worker answered in {attempts} fresh connections: {dict(counts)} of {workers}")

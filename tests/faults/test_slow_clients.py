"""Slow, idle and surplus clients against ``rolegate serve``: closed within their timeout, counted, and
nobody else waits for them.

The first test runs on the defaults (no ``server.timeouts`` in the config): 500 connections that send
their request head a header line a second are closed within ``timeouts.header`` (10 s) of opening,
while normal requests keep being answered.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.serve import RolegateProcess, minimal_config

pytestmark = pytest.mark.lab

SLOW_CLIENTS = 500
DEFAULT_HEADER_TIMEOUT = 10.0
# Time allowed beyond a timeout for the close to be seen on a busy machine (the bound, not a measurement).
SLACK = 10.0


async def metric(served: RolegateProcess, name: str, **labels: str) -> float:
    async with aiohttp.ClientSession() as http:
        async with http.get(served.internal_url + "/metrics") as resp:
            text = await resp.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


async def closed_by_server(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    until: float,
    trickle: bytes | None,
    every: float = 1.0,
) -> bool:
    """Read until the server closes the connection (True) or ``until`` passes (False), sending
    ``trickle`` every ``every`` seconds meanwhile (a client that is slow, not dead)."""
    try:
        while time.monotonic() < until:
            try:
                data = await asyncio.wait_for(reader.read(65536), min(every, max(0.01, until - time.monotonic())))
            except (TimeoutError, asyncio.TimeoutError):
                if trickle:
                    writer.write(trickle)
                    await writer.drain()
                continue
            if not data:
                return True
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True
    finally:
        writer.close()


async def answered(url: str, count: int, pause: float) -> dict[int, int]:
    """``count`` requests, each on a fresh connection, ``pause`` apart."""
    statuses: dict[int, int] = {}
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True), timeout=aiohttp.ClientTimeout(total=10)
    ) as http:
        for _ in range(count):
            async with http.get(url) as resp:
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
            await asyncio.sleep(pause)
    return statuses


async def test_slow_header_clients_are_closed_within_the_header_timeout_while_others_are_served(
    tmp_path, lab_backend
) -> None:
    with RolegateProcess(minimal_config(lab_backend.url), tmp_path) as served:
        port = served.port
        opened = time.monotonic()
        connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(SLOW_CLIENTS)]
        for _, writer in connections:
            writer.write(b"GET /public/x HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # ... and the rest a line a second
        deadline = opened + DEFAULT_HEADER_TIMEOUT + SLACK
        slow = asyncio.gather(
            *(closed_by_server(r, w, until=deadline, trickle=b"X-Slow: 1\r\n") for r, w in connections)
        )
        normal = await answered(served.url + "/public/y", 40, 0.1)
        closed = await slow
        took = time.monotonic() - opened
        still_open = closed.count(False)
        print(
            f"{SLOW_CLIENTS - still_open} of {SLOW_CLIENTS} slow clients closed {took:.1f}s after they opened; "
            f"meanwhile {normal}"
        )
        assert normal == {200: 40}
        assert still_open == 0, f"{still_open} slow-header connections still open {took:.0f}s after opening"
        assert await metric(served, "rolegate_connections_closed_total", reason="header_timeout") >= SLOW_CLIENTS


async def test_idle_and_slow_body_clients_are_closed_and_counted(tmp_path, lab_backend) -> None:
    config = minimal_config(lab_backend.url, timeouts={"header": "2s", "idle": "2s", "body": "3s"})
    with RolegateProcess(config, tmp_path) as served:
        started = time.monotonic()
        # Idle: one request on a kept-alive connection, then nothing.
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(b"GET /public/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200")
        idle = asyncio.ensure_future(closed_by_server(reader, writer, until=started + 2 + SLACK, trickle=None))
        # Slow body: a head promising a megabyte, then ten bytes every half second.
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(
            b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: 1000000\r\n\r\n"
        )
        body = asyncio.ensure_future(
            closed_by_server(reader, writer, until=started + 3 + SLACK, trickle=b"0123456789", every=0.5)
        )
        # A body that arrives in time is forwarded whole.
        async with aiohttp.ClientSession() as http:
            async with http.post(served.url + "/upload", data=b"x" * 200_000) as resp:
                assert resp.status == 200, await resp.text()
        assert await idle, "an idle kept-alive connection stayed open past timeouts.idle"
        assert await body, "a request body trickling in stayed open past timeouts.body"
        print(f"idle and slow-body connections closed within {time.monotonic() - started:.1f}s")
        assert await metric(served, "rolegate_connections_closed_total", reason="body_timeout") >= 1


async def test_connections_past_the_cap_make_room_or_get_503(tmp_path, lab_backend) -> None:
    config = minimal_config(lab_backend.url, timeouts={"header": "60s"}, max_connections=20)
    with RolegateProcess(config, tmp_path) as served:
        # 20 connections that started a request: the cap is reached and none of them can make room.
        talking = [await asyncio.open_connection("127.0.0.1", served.port) for _ in range(20)]
        for _, writer in talking:
            writer.write(b"GET /public/x HTTP/1.1\r\n")
            await writer.drain()
        await asyncio.sleep(0.5)
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503") and b"Too many connections" in answer, answer
        assert await metric(served, "rolegate_connections_closed_total", reason="over_capacity") >= 1
        for _, writer in talking:
            writer.close()
        await asyncio.sleep(1.0)

        # 20 connections that never sent a byte: a real request takes the place of the oldest one.
        silent = [await asyncio.open_connection("127.0.0.1", served.port) for _ in range(20)]
        await asyncio.sleep(0.5)
        assert await answered(served.url + "/public/y", 3, 0.1) == {200: 3}
        assert await metric(served, "rolegate_connections_closed_total", reason="evicted") >= 1
        for _, writer in silent:
            writer.close()


async def test_long_lived_requests_outlive_the_timeouts(tmp_path, lab_backend) -> None:
    """The timeouts are about clients that are slow to ask: a WebSocket, an event stream, a slow backend
    and a kept-alive connection that keeps asking all outlive them."""
    config = minimal_config(lab_backend.url, timeouts={"header": "1s", "idle": "1s", "body": "1s"})
    with RolegateProcess(config, tmp_path) as served:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(served.url.replace("http", "ws") + "/ws") as ws:
                for i in range(4):
                    await asyncio.sleep(0.8)  # 3.2 s in all, quiet for most of it
                    await ws.send_str(f"ping {i}")
                    assert (await ws.receive(timeout=5)).data == f"ping {i}"
            async with http.get(served.url + "/sse?count=4&interval=0.8") as resp:
                assert resp.status == 200 and (await resp.text()).count("event: tick") == 4
            async with http.get(served.url + "/slow?delay=2.5") as resp:
                assert resp.status == 200
            for _ in range(4):  # the same kept-alive connection, reused within the idle timeout
                async with http.get(served.url + "/public/x") as resp:
                    assert resp.status == 200
                await asyncio.sleep(0.5)
        assert await metric(served, "rolegate_connections_closed_total") == 0

"""Fault: SIGTERM under load (issue 17, item 7): every request in flight is answered, none is reset.

Keep-alive clients, one-connection-per-request clients and slow requests run against two workers
when the master gets SIGTERM. Before: a worker closed its idle keep-alive connections at once
(a client sending its next request at that moment had it dropped) and closed its listening socket
with connections still in the accept queue (reset after the client had sent its request). Now:
new connections are refused cleanly (their request is never sent), every request the server took
gets its complete answer, the slow ones included, and the master exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time

import pytest

from tests.faults.http_load import Load, exchange
from tests.support.serve import RolegateProcess, minimal_config

pytestmark = pytest.mark.lab

ROUNDS = 2  # SIGTERM under load this many times (a fresh server each time): a race has two chances to show


async def _slow(port: int, delay: float) -> tuple[int, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        status, _ = await asyncio.wait_for(exchange(reader, writer, f"/slow?delay={delay}", close=True), 30)
        return status, delay
    finally:
        writer.close()


async def _sigterm_under_load(served: RolegateProcess) -> tuple[Load, list, float, int]:
    load = Load(served.port, clients=8, fresh=4, duration=40)
    load.start()
    await asyncio.sleep(1.0)
    slow = [asyncio.ensure_future(_slow(served.port, 2.0)) for _ in range(4)]
    await asyncio.sleep(0.5)  # the slow requests are in flight, the load is running
    sent_at = time.monotonic()
    served.signal(signal.SIGTERM)
    # Clients stop at their first refused connection: the server is gone for them.
    await asyncio.wait_for(load.finished(), 60)
    slow_results = await asyncio.gather(*slow, return_exceptions=True)
    code = await asyncio.to_thread(served.proc.wait, 30)
    return load, slow_results, time.monotonic() - sent_at, code


async def test_sigterm_under_load_answers_every_request_in_flight(tmp_path, lab_backend):
    for round_ in range(ROUNDS):
        served = RolegateProcess(minimal_config(lab_backend.url, workers=2), tmp_path / f"r{round_}")
        served.start()
        try:
            load, slow, took, code = await _sigterm_under_load(served)
        finally:
            served.stop()
        lost = load.lost()
        assert lost == [], f"requests sent and never answered: {lost[:5]} ({len(lost)}; {load.fates()})"
        assert slow == [(200, 2.0)] * 4, slow  # in flight for 1.5 s more when SIGTERM came
        assert load.fates().get("ok", 0) > 0 and load.fates().get("refused", 0) > 0, load.fates()
        assert {r.status for r in load.results if r.fate == "ok"} == {200}
        assert code == 0, served.log()
        with socket.socket() as probe:  # nothing listens any more
            assert probe.connect_ex(("127.0.0.1", served.port)) != 0
        print(
            f"\nSIGTERM under load (round {round_ + 1}): master exited 0 after {took:.2f}s; "
            f"{load.fates()}; slow requests {slow}"
        )

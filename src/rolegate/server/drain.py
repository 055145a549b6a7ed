"""A worker's listening socket, and how it stops without resetting connections the kernel already took.

Closing a listening socket resets every connection still waiting in its accept queue, including
clients that had connected and sent a request. So a draining worker:

1. closes the door: a socket filter on the listening socket drops new SYNs (Linux). A client whose
   SYN is dropped sends it again about a second later and then gets a clean "connection refused"
   (or, behind a load balancer, another instance); its request was never sent. Handshakes already
   under way still complete: their final ACK passes the filter;
2. keeps accepting until the accept queue is empty and at least ``SETTLE_SECONDS`` have passed.
   Meanwhile every response carries ``Connection: close``, so clients on keep-alive connections
   stop reusing them instead of racing the close of an idle connection;
3. closes the socket; then aiohttp closes idle connections and lets requests in flight finish
   (``server.drain_timeout``).

Where the filter cannot be attached (not Linux), the socket is closed at once, as before.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import socket
import struct
import time

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

log = logging.getLogger("rolegate.worker")

# Long enough for a client on a busy keep-alive connection to get one "Connection: close" answer.
SETTLE_SECONDS = 0.5
# Upper bound on waiting for the accept queue to empty.
QUEUE_WAIT_SECONDS = 2.0

_SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)


class _Insn(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Insn))]


# Classic BPF on a TCP socket sees the TCP header at offset 0; byte 13 holds the flags.
# A segment without ACK addressed to the listener is a new SYN: drop it; let everything else pass
# (the final ACK of a handshake under way, and, on connections accepted later, their traffic).
_BPF_LD_B_ABS, _BPF_JMP_JSET_K, _BPF_RET_K = 0x30, 0x45, 0x06
_TCP_FLAGS_OFFSET, _TCP_ACK = 13, 0x10
_NO_NEW_SYNS = (
    (_BPF_LD_B_ABS, 0, 0, _TCP_FLAGS_OFFSET),
    (_BPF_JMP_JSET_K, 1, 0, _TCP_ACK),  # ACK set: jump to "accept"
    (_BPF_RET_K, 0, 0, 0),  # drop
    (_BPF_RET_K, 0, 0, 0xFFFFFFFF),
)  # accept the whole segment


class Listener:
    """The worker's SO_REUSEPORT listening socket (served through ``web.SockSite``) and its drain."""

    def __init__(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.sock = sock

    async def drain(self) -> None:
        """Steps 1 and 2 above; the caller then stops the site (step 3)."""
        _close_connections_after_each_response()
        if not self._close_door():
            return
        started = time.monotonic()
        while True:
            elapsed = time.monotonic() - started
            if elapsed >= QUEUE_WAIT_SECONDS or (elapsed >= SETTLE_SECONDS and not self._queued()):
                return
            await asyncio.sleep(0.01)

    def _close_door(self) -> bool:
        insns = (_Insn * len(_NO_NEW_SYNS))(*(_Insn(*insn) for insn in _NO_NEW_SYNS))
        prog = _Prog(len(_NO_NEW_SYNS), ctypes.cast(insns, ctypes.POINTER(_Insn)))
        try:
            # The kernel copies the program; ``insns`` only has to live through this call.
            self.sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, bytes(prog))
        except OSError as exc:
            log.debug("cannot filter new connections while draining (%s); closing the listener at once", exc)
            return False
        return True

    def _queued(self) -> int:
        """Connections in the accept queue (``tcpi_unacked`` of a listening socket); 0 when unknown."""
        try:
            info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
            queued: int = struct.unpack_from("I", info, 24)[0]
            return queued
        except (OSError, AttributeError, struct.error):
            return 0


def _close_connections_after_each_response() -> None:
    """From now on every response this process prepares says ``Connection: close`` (and aiohttp closes
    the connection after it), so a keep-alive client stops sending on a connection that is about to close.

    Done by wrapping ``StreamResponse.prepare`` when the drain starts, in this (exiting) worker only,
    so serving pays nothing for it: an ``on_response_prepare`` hook would cost every response a
    signal dispatch (1-3 µs, a few percent of a proxied request).
    """
    prepare = web.StreamResponse.prepare
    if getattr(prepare, "_rolegate_draining", False):
        return

    async def prepare_closing(self: web.StreamResponse, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.status != 101:  # a WebSocket upgrade keeps its own Connection header
            self.force_close()
        return await prepare(self, request)

    prepare_closing._rolegate_draining = True  # type: ignore[attr-defined]
    web.StreamResponse.prepare = prepare_closing  # type: ignore[method-assign]

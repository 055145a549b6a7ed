"""The Python floor of a forward-auth answer: uvloop and one asyncio protocol answering every request head with the
same 200, parsing nothing, deciding nothing. No forward-auth server written in Python answers for less, so
``nginx auth_request -> Python floor`` bounds from above what the lean listener (rolegate.server.lean_auth) can
reach behind nginx on this machine.

    python bench/_floor.py PORT
"""

from __future__ import annotations

import asyncio
import sys

import uvloop

ANSWER = (
    b"HTTP/1.1 200 OK\r\nX-Rolegate-User: bench-user\r\nContent-Length: 0\r\n"
    b"Date: Mon, 07 Dec 2026 00:00:00 GMT\r\nServer: floor\r\n\r\n"
)


class Floor(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        data = self.pending + data
        heads = data.count(b"\r\n\r\n")  # the subrequests carry no body
        self.pending = data[data.rfind(b"\r\n\r\n") + 4 :] if heads else data
        if heads:
            self.transport.write(ANSWER * heads)  # type: ignore[attr-defined]


async def main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Floor, "127.0.0.1", port, backlog=2048)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.install()
    asyncio.run(main(int(sys.argv[1])))

"""Exact bytes over a socket, for tests that send what HTTP clients refuse to (non-UTF-8 headers, odd names).

``send`` writes one request as given and reads one response; ``RecordingUpstream`` is a tiny HTTP/1.1
server that answers 200 and keeps the raw head of every request it received. Both speak to 127.0.0.1
only and every read is bounded in size and time.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from dataclasses import dataclass, field

_MAX_RESPONSE = 1024 * 1024
_MAX_HEAD = 256 * 1024


@dataclass
class Response:
    status: int  # 0 when the server closed without a status line
    head: bytes
    body: bytes

    def header(self, name: str) -> str | None:
        """The first header named ``name`` (case-insensitive), decoded as latin-1."""
        wanted = name.lower().encode()
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == wanted:
                return value.strip().decode("latin-1")
        return None


def request_bytes(
    method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b"", *, host: bytes = b"127.0.0.1"
) -> bytes:
    """An HTTP/1.1 request with exactly these header lines (plus Host unless given, Connection: close,
    and Content-Length when there is a body)."""
    names = {name.lower() for name, _ in headers}
    lines = [method + b" " + target + b" HTTP/1.1"]
    if b"host" not in names:
        lines.append(b"Host: " + host)
    lines.extend(name + b": " + value for name, value in headers)
    if body and b"content-length" not in names:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def send(port: int, raw: bytes, *, timeout: float = 10.0) -> Response:
    """Send ``raw`` to 127.0.0.1:``port`` and read one response: its head, then a ``Content-Length`` body
    (none for HEAD, 1xx, 204, 304), or what comes until the server closes. Bounded in size and time."""
    no_body = raw.split(b" ", 1)[0] == b"HEAD"
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(raw)  # no half-close: aiohttp drops a connection whose client sent EOF
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered (e.g. 400) and closed before reading everything
        try:
            while len(data) < _MAX_RESPONSE:
                if b"\r\n\r\n" in data:
                    head, _, body = data.partition(b"\r\n\r\n")
                    status = _status(head)
                    if status == 100:  # an interim answer: the real one follows
                        data = body
                        continue
                    length = Response(status, head, b"").header("Content-Length")
                    if no_body or status in (204, 304) or 100 <= status < 200:
                        break
                    if length is not None and length.isdigit() and len(body) >= int(length):
                        break
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    return Response(_status(head), head, body)


def _status(head: bytes) -> int:
    first = head.split(b"\r\n", 1)[0].split(b" ")
    if len(first) >= 2 and first[0].startswith(b"HTTP/") and first[1].isdigit():
        return int(first[1])
    return 0


@dataclass
class Received:
    """One request as the upstream saw it."""

    request_line: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    @property
    def target(self) -> bytes:
        parts = self.request_line.split(b" ")
        return parts[1] if len(parts) > 1 else b""

    def names(self) -> list[bytes]:
        return [name.lower() for name, _ in self.headers]

    def values(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


class _Handler(socketserver.StreamRequestHandler):
    timeout = 10

    def handle(self) -> None:  # pragma: no cover - exercised through the tests
        try:
            self._serve()
        except (TimeoutError, ConnectionError):
            pass  # an idle keep-alive connection timed out, or the proxy closed it

    def _serve(self) -> None:
        while True:
            line = self.rfile.readline(_MAX_HEAD)
            if not line:
                return
            received = Received(line.rstrip(b"\r\n"))
            length, chunked, total = 0, False, 0
            while True:
                line = self.rfile.readline(_MAX_HEAD)
                total += len(line)
                if line in (b"\r\n", b"\n", b"") or total > _MAX_HEAD:
                    break
                name, _, value = line.rstrip(b"\r\n").partition(b":")
                received.headers.append((name, value.strip()))
                if name.lower() == b"content-length":
                    length = int(value.strip() or 0)
                elif name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            if chunked:
                while True:
                    size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                    self.rfile.read(size + 2)
                    if size == 0:
                        break
            elif length:
                self.rfile.read(length)
            self.server.received.append(received)  # type: ignore[attr-defined]
            body = b"" if received.request_line.startswith(b"HEAD ") else b"ok"  # a HEAD answer has no body
            self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\n" + body)
            self.wfile.flush()


class RecordingUpstream(socketserver.ThreadingTCPServer):
    """A keep-alive HTTP/1.1 upstream on 127.0.0.1 that answers ``200 ok`` and records each request."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[Received] = []
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> "RecordingUpstream":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)

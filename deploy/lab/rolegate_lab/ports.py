"""Free TCP ports on 127.0.0.1 for test servers, outside the range the kernel gives outgoing connections."""
from __future__ import annotations

import random
import socket


def _listen_range() -> tuple[int, int]:
    """Ports below the kernel's ephemeral range (``ip_local_port_range``)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            low = int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return 10000, max(10001, low - 1)


_handed_out: set[int] = set()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    Chosen at random BELOW the kernel's ephemeral range: a port the kernel picks for ``bind(0)`` comes
    from the range every outgoing connection (to PostgreSQL, Redis, the IdP) also takes its local port
    from, so on a busy machine a port reserved early was often in use as a client port by the time the
    server bound it (``Address already in use``). No port is handed out twice by one process; callers that
    still lose the race retry (see ``LabProcess.start``).
    """
    low, high = _listen_range()
    for _ in range(500):
        port = random.randint(low, high)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # a machine with that range full
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False

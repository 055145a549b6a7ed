"""The scale tests name the worker that answered (tests/support/workers.py): the server side of THIS
connection, found in /proc/net/tcp by its peer port *and* its own port, open. Another socket with the same
peer port number — a client of some other server that listens on that number, or a closed connection in
TIME_WAIT (inode 0) — is not it. On a machine where many tests run servers on ephemeral ports, matching the
peer port alone named no worker ("no worker holds the connection") or the wrong one now and then.
"""

from __future__ import annotations

import os
import socket

from tests.support.workers import _inode_of_connection_from

DECOYS = 40
# Where a socket sits in /proc/net/tcp depends on a hash of its addresses: several rounds, so that matching
# the peer port alone would meet a decoy first in some round (it did in 8 of 20 single rounds here).
ROUNDS = 10


def test_the_server_side_of_this_connection_is_named_among_sockets_with_the_same_peer_port():
    for _ in range(ROUNDS):
        one_round()


def one_round() -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as server,
        socket.create_server(("127.0.0.1", 0), backlog=2 * DECOYS) as other_server,
    ):
        server_port = server.getsockname()[1]
        # Our client's port number is the port another server listens on (on 127.0.0.1; the client is
        # 127.0.0.2), so every client of that other server has the same peer port as our connection.
        shared_port = other_server.getsockname()[1]
        open_decoys = [socket.create_connection(("127.0.0.1", shared_port)) for _ in range(DECOYS)]
        closed = [socket.create_connection(("127.0.0.1", shared_port)) for _ in range(DECOYS // 4)]
        accepted = [other_server.accept()[0] for _ in range(len(open_decoys) + len(closed))]
        for sock in closed:
            sock.close()  # the client closes first: its side stays in TIME_WAIT, inode 0, peer port shared_port
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            client.bind(("127.0.0.2", shared_port))
            client.connect(("127.0.0.1", server_port))
            conn, _ = server.accept()
            with conn:
                expected = str(os.fstat(conn.fileno()).st_ino)
                assert _inode_of_connection_from(shared_port, server_port) == expected
        finally:
            client.close()
            for sock in open_decoys + accepted:
                sock.close()

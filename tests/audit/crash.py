"""Kill -9 helpers, reusable for ``rolegate serve``: run a child until it acknowledged N events, SIGKILL it,
then check every acknowledged event is in the store and the chain verifies.

A child acknowledges by printing ``ACK <seq> <event id>`` on stdout (flushed) after ``emit_durable``
returned; for the proxy, print the same after a write request got its response.
"""

from __future__ import annotations

import os
import selectors
import signal
import sqlite3
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

CHILD = Path(__file__).with_name("durable_child.py")


def run_and_kill(
    argv: Sequence[str], *, acks: int, deadline_s: float = 60.0, env: dict[str, str] | None = None
) -> list[tuple[int, str]]:
    """Start ``argv``, read its ``ACK seq id`` lines until ``acks`` arrived, SIGKILL it, read what it had
    already written to the pipe, and return every (seq, id) acknowledged. Raises AssertionError when the
    child exits or stalls first."""
    proc = subprocess.Popen(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})}
    )
    assert proc.stdout is not None
    acked: list[tuple[int, str]] = []
    buffer = b""
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    stop_at = time.monotonic() + deadline_s
    killed = False
    try:
        while True:
            if not killed and len(acked) >= acks:
                os.kill(proc.pid, signal.SIGKILL)  # mid-stream: writes and acks are in flight
                killed = True
            if time.monotonic() > stop_at:
                raise AssertionError(f"child gave {len(acked)} of {acks} acknowledgements in {deadline_s}s")
            if not selector.select(timeout=1.0):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break  # the pipe closed: the child is gone (killed, or it died on its own)
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                parts = line.decode(errors="replace").split()
                if len(parts) == 3 and parts[0] == "ACK":
                    acked.append((int(parts[1]), parts[2]))
    finally:
        selector.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    if not killed:
        raise AssertionError(f"child exited with {proc.returncode} after {len(acked)} acks:\n{stderr[-2000:]}")
    assert proc.returncode == -signal.SIGKILL
    return acked


def missing_acknowledged(db_path: Path, acked: Sequence[tuple[int, str]]) -> list[tuple[int, str]]:
    """The acknowledged (seq, id) pairs not found in the SQLite audit table (should be empty)."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        found = dict(db.execute("SELECT seq, json_extract(body, '$.id') FROM audit").fetchall())
    finally:
        db.close()
    return [(seq, event_id) for seq, event_id in acked if found.get(seq) != event_id]


def missing_by_body_field(db_path: Path, field: str, values: Sequence[str], kind: str | None = None) -> list[str]:
    """The values of a body field (e.g. the unique ``path`` of each acknowledged write through
    ``rolegate serve``) that no audit row holds (should be empty)."""
    if not field.replace("_", "").isalpha():
        raise ValueError("field must be a plain body field name")
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        sql = "SELECT json_extract(body, ?) FROM audit" + (" WHERE kind=?" if kind else "")
        found = {row[0] for row in db.execute(sql, (f"$.{field}", kind) if kind else (f"$.{field}",))}
    finally:
        db.close()
    return [value for value in values if value not in found]

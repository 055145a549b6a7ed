"""Copies of committed audit events for a SIEM: a JSONL file and stdout, one JSON line per event.

The Store is the record of truth and carries the chain; these sinks receive each batch after the
Store committed it, with its seq and hashes, so a copy elsewhere can later prove truncation or a
rewritten chain. Writes are blocking (fsync) and run on the AuditLog's own thread.

A line is in a copy whole or not at all: a JSONL batch that fails half-way (a full disk) is cut back
off the file, and a torn last line an interrupted process left behind is cut when the file is opened.
A sink that fails raises OSError with ``rows_written``: how many rows of the batch did arrive (the
AuditLog keeps the rest and tries again).
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

log = logging.getLogger("rolegate.audit")

# One committed event: (seq, ts, kind, body_json, prev_hash, hash)
Row = tuple[int, float, str, str, str, str]
PIPE_BUF = 4096


def format_line(row: Row) -> bytes:
    """``{"seq":..,"ts":..,"time":..,"kind":..,"prev_hash":..,"hash":..,"event":{body}}`` + newline."""
    seq, ts, kind, body, prev_hash, hash_ = row
    when = datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
    # body is already canonical JSON: splice it in rather than parse and dump it again.
    return (
        f'{{"seq":{seq},"ts":{ts:.6f},"time":"{when}","kind":"{kind}","prev_hash":"{prev_hash}",'
        f'"hash":"{hash_}","event":{body}}}\n'
    ).encode("utf-8", "backslashreplace")


class Sink(Protocol):
    name: str

    def write(self, rows: list[Row], durable: bool) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """Append to a file opened O_APPEND, one write() per batch under an exclusive lock.

    The lock (flock, shared by every worker that appends to the file) lets a failed batch be cut back
    off the end without cutting another worker's lines, and keeps the torn-tail repair at open from
    racing a live write.
    """

    __slots__ = ("name", "path", "_fd")

    def __init__(self, path: Path) -> None:
        self.name = f"jsonl:{path}"
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            self._cut_torn_tail()
        except OSError as exc:  # a copy we cannot repair is still worth appending to; verify names the tear
            log.warning("audit sink %s: could not check its last line: %s", self.name, exc)

    def _cut_torn_tail(self) -> None:
        """A process killed in the middle of a write can leave a last line without its newline; the
        next append would be glued to it. Cut it: its event is in the Store (sinks copy committed events)."""
        fd = self._fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(fd).st_size
            if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
                return
            end = size
            while end > 0:
                start = max(0, end - 65536)
                newline = os.pread(fd, end - start, start).rfind(b"\n")
                if newline >= 0:
                    end = start + newline + 1
                    break
                end = start
            os.ftruncate(fd, end)
            log.warning(
                "audit sink %s: cut a torn last line (%d bytes) left by an interrupted write", self.name, size - end
            )
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def write(self, rows: list[Row], durable: bool) -> None:
        data = memoryview(b"".join(format_line(r) for r in rows))
        fd = self._fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            start = os.fstat(fd).st_size
            try:
                while data:
                    written = os.write(fd, data)
                    data = data[written:]
                if durable:
                    os.fsync(fd)
            except OSError as exc:
                # ENOSPC after part of the batch: take the part back, so no line is left cut in half.
                try:
                    os.ftruncate(fd, start)
                except OSError as undo:
                    exc.add_note(f"and the partial batch could not be cut back off the file: {undo}")
                exc.rows_written = 0  # type: ignore[attr-defined]
                raise
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class StdoutSink:
    """Lines to stdout, in writes of at most PIPE_BUF so workers sharing a pipe never interleave a line."""

    __slots__ = ("name", "_fd")

    def __init__(self, fd: int | None = None) -> None:
        self.name = "stdout"
        self._fd = sys.stdout.fileno() if fd is None else fd

    def write(self, rows: list[Row], durable: bool) -> None:
        chunk, sent, pending = b"", 0, 0
        try:
            for row in rows:
                line = format_line(row)
                if chunk and len(chunk) + len(line) > PIPE_BUF:
                    self._write_all(chunk)
                    sent, chunk, pending = sent + pending, b"", 0
                chunk += line
                pending += 1
            if chunk:
                self._write_all(chunk)
        except OSError as exc:
            exc.rows_written = sent  # type: ignore[attr-defined]  # whole chunks that went out before it
            raise

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def close(self) -> None:
        pass


def open_sinks(names: tuple[str, ...], base_dir: Path | None = None) -> list[Sink]:
    """The non-store sinks named in ``audit.sinks``; relative JSONL paths are relative to base_dir."""
    sinks: list[Sink] = []
    for name in names:
        if name == "stdout":
            sinks.append(StdoutSink())
        elif name.startswith("jsonl:"):
            path = Path(name[len("jsonl:") :])
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            sinks.append(JsonlSink(path))
    return sinks

"""Copies of committed audit events for a SIEM: a JSONL file and stdout, one JSON line per event.

The Store is the record of truth and carries the chain; these sinks receive each batch after the
Store committed it, with its seq and hashes, so a copy elsewhere can later prove truncation or a
rewritten chain. Writes are blocking (fsync) and run on the AuditLog's own thread.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

# One committed event: (seq, ts, kind, body_json, prev_hash, hash)
Row = tuple[int, float, str, str, str, str]
PIPE_BUF = 4096


def format_line(row: Row) -> bytes:
    """``{"seq":..,"ts":..,"time":..,"kind":..,"prev_hash":..,"hash":..,"event":{body}}`` + newline."""
    seq, ts, kind, body, prev_hash, hash_ = row
    when = datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
    # body is already canonical JSON: splice it in rather than parse and dump it again.
    return (f'{{"seq":{seq},"ts":{ts:.6f},"time":"{when}","kind":"{kind}","prev_hash":"{prev_hash}",'
            f'"hash":"{hash_}","event":{body}}}\n').encode("utf-8", "backslashreplace")


class Sink(Protocol):
    name: str

    def write(self, rows: list[Row], durable: bool) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """Append to a file opened O_APPEND; one write() per batch keeps workers' lines whole."""

    __slots__ = ("name", "path", "_fd")

    def __init__(self, path: Path) -> None:
        self.name = f"jsonl:{path}"
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def write(self, rows: list[Row], durable: bool) -> None:
        data = memoryview(b"".join(format_line(r) for r in rows))
        while data:
            written = os.write(self._fd, data)
            data = data[written:]
        if durable:
            os.fsync(self._fd)

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
        chunk = b""
        for row in rows:
            line = format_line(row)
            if chunk and len(chunk) + len(line) > PIPE_BUF:
                self._write_all(chunk)
                chunk = b""
            chunk += line
        if chunk:
            self._write_all(chunk)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def close(self) -> None:
        pass


def open_sinks(names: tuple[str, ...], base_dir: Path | None = None) -> list[Sink]:
    """The non-store sinks named in ``audit.sinks``; relative JSONL paths are relative to base_dir."""
    sinks: list[Sink] = []
    for name in names:
        if name == "stdout":
            sinks.append(StdoutSink())
        elif name.startswith("jsonl:"):
            path = Path(name[len("jsonl:"):])
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            sinks.append(JsonlSink(path))
    return sinks

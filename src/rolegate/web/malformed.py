"""Malformed requests: one INFO line each, and never more than a few a second.

A request rolegate cannot read — bytes that are not valid where they appear, a request line or header
aiohttp's parser refuses — is the client's mistake, not rolegate's: it is answered 400 and logged as
one INFO line, never with a traceback. Whoever sends thousands of them must not fill the log, so past
``PER_SECOND`` lines in one second the rest are only counted, and the next line written says how many
were left out.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["PER_SECOND", "RateLimit", "ServerLog", "log", "printable"]

PER_SECOND = 10


class RateLimit(logging.Filter):
    """Let through at most ``per_second`` records a second; the next record let through after a
    dropped one says how many were dropped."""

    def __init__(self, per_second: int) -> None:
        super().__init__()
        self.per_second = per_second
        self._second = 0
        self._written = 0
        self._dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        second = int(record.created)
        if second != self._second:
            self._second, self._written = second, 0
        if self._written >= self.per_second:
            self._dropped += 1
            return False
        self._written += 1
        if self._dropped:
            # No "%" added: the record's own arguments are still applied to its message.
            record.msg = f"{record.msg} [{self._dropped} more not logged: over {self.per_second}/s]"
            self._dropped = 0
        return True


log = logging.getLogger("rolegate.malformed")
log.addFilter(RateLimit(PER_SECOND))


def printable(text: str) -> str:
    """``text`` for a log line: control characters, and bytes that were not UTF-8, escaped (no forged lines)."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


class ServerLog(logging.LoggerAdapter):
    """aiohttp's server logger in rolegate's workers (``AppRunner(logger=...)``): a request the HTTP parser
    refused is a malformed request (one rate-limited INFO line, no traceback); anything else is logged
    as aiohttp logs it."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})

    def log(self, level: int, msg: object, *args: Any, exc_info: Any = None, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError) and level > logging.INFO:  # not aiohttp's debug lines
            remote = args[0] if args else "?"
            log.info(
                "malformed request from %s: %s %s",
                remote,
                exc_info.code,
                printable(exc_info.message if isinstance(exc_info.message, str) else repr(exc_info.message)),
            )
            return
        super().log(level, msg, *args, exc_info=exc_info, **kwargs)

"""Where a browser may be sent after sign-in or sign-out: never anywhere an attacker chooses.

Accepted: a path on the public URL (``/x``), or an absolute http(s) URL whose host is the public
URL's host or one of ``server.allowed_hosts``. Everything ambiguous is refused outright
(``//evil``, ``/\\evil``, ``https:evil``, userinfo, control characters, other schemes).
"""

from __future__ import annotations

from urllib.parse import urlsplit

_MAX_LENGTH = 4096


class RedirectPolicy:
    """Checks return targets against the public URL and the allowed hosts."""

    __slots__ = ("public_url", "_public_netloc", "_hosts", "_scheme")

    def __init__(self, public_url: str, allowed_hosts: tuple[str, ...] = ()) -> None:
        parts = urlsplit(public_url)
        self.public_url = public_url.rstrip("/")
        self._scheme = parts.scheme
        self._public_netloc = parts.netloc.lower()
        # Entries without a port allow any port of that host; entries with one, only that port.
        self._hosts = frozenset(h.lower() for h in allowed_hosts)

    def host_allowed(self, netloc: str) -> bool:
        netloc = netloc.lower()
        if netloc == self._public_netloc or netloc in self._hosts:
            return True
        host = netloc.rsplit(":", 1)[0] if not netloc.endswith("]") else netloc
        return host in self._hosts

    def safe_target(self, target: str | None) -> str | None:
        """The absolute URL to go to, or None when ``target`` is not an acceptable return URL."""
        if not target or len(target) > _MAX_LENGTH:
            return None
        if any(ord(c) < 0x21 or c == "\x7f" for c in target) or "\\" in target:
            return None
        if target.startswith("/"):
            # A path on our own public URL; "//host" would be scheme-relative, i.e. another site.
            if target.startswith("//"):
                return None
            return self.public_url + target
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not target.lower().startswith(parts.scheme + "://"):
            return None
        netloc = parts.netloc
        if not netloc or "@" in netloc or not parts.hostname:
            return None
        if not self.host_allowed(netloc):
            return None
        # The public host is only reachable over its own scheme (no downgrade to http).
        if netloc.lower() == self._public_netloc and parts.scheme != self._scheme:
            return None
        return target

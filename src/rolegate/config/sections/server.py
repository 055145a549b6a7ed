"""``server``: listeners, public URL, workers, limits."""

from __future__ import annotations

import ipaddress
import os
from datetime import timedelta
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from rolegate.config.types import Duration, Listen, Section, Size


class ForwardAuthConfig(Section):
    """``server.forward_auth``: which front proxy asks ``/.rolegate/auth``. Only that proxy's routing
    headers are read (see ``rolegate.identity.forward_auth``), and only from ``trusted_proxies``
    (loopback when that list is empty)."""

    proxy: Literal["nginx", "traefik", "caddy", "envoy"]
    # The lean forward-auth listener (host:port, every worker binds it with SO_REUSEPORT): remembered answers
    # written without aiohttp's request machinery, everything else relayed to the worker's application
    # (rolegate.server.lean_auth). Absent: forward-auth is answered on server.listen only.
    listen: Listen | None = None


class ServerTimeouts(Section):
    """How long a client may take (``server.timeouts``); a client too slow is disconnected and counted."""

    # From the connection opening, or the first byte of the next request on a kept-alive one, until the
    # request's headers are complete.
    header: Duration = timedelta(seconds=10)
    # A kept-alive connection waiting for its next request is closed after this.
    idle: Duration = timedelta(seconds=75)
    # From a request's headers until its whole body has arrived (uploads included).
    body: Duration = timedelta(minutes=5)

    @field_validator("header", "idle", "body")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value.total_seconds() <= 0:
            raise ValueError("a timeout must be a positive duration, e.g. 10s")
        return value


class ServerConfig(Section):
    listen: Listen
    public_url: str
    internal_listen: Listen | None = None
    workers: int | Literal["auto"] = 1
    # Hosts a post-login redirect may go to, besides public_url's own host.
    allowed_hosts: tuple[str, ...] = ()
    # Proxies whose X-Forwarded-For we extend rather than replace (CIDRs); also the only peers
    # /.rolegate/auth answers (when empty: loopback peers only).
    trusted_proxies: tuple[str, ...] = ()
    # Forward-auth for one named front proxy; absent, /.rolegate/auth is off (404).
    forward_auth: ForwardAuthConfig | None = None
    # Drop every request header with "_" in its name, as nginx does (look-alikes of the headers rolegate
    # sets or strips, e.g. X_Rolegate_User, are dropped either way).
    drop_underscore_headers: bool = False
    max_body: Size = 1024**3 * 10
    max_header_size: Size = 16 * 1024
    timeouts: ServerTimeouts = ServerTimeouts()
    # Open client connections per worker; past it a new connection takes the place of the oldest one
    # that has not sent a byte yet, or gets 503. Default: half the worker's open-file limit (a proxied
    # request holds an upstream connection too), at most 16384.
    max_connections: int | None = Field(default=None, ge=1, le=1_000_000)
    drain_timeout: Duration = timedelta(seconds=10)
    # The zone people read times in (admin UI, audit in the UI, day-pass pages), e.g. Europe/Amsterdam.
    # Default: the zone of the day-pass templates when they all name one, else UTC.
    timezone: str | None = None
    # Files that live only while `serve` runs (per-worker metrics), removed when it exits. Relative
    # to the config file; default: run/ in the data directory (beside the SQLite file, else the cwd).
    runtime_dir: str | None = None

    @model_validator(mode="after")
    def _forward_auth_listen(self) -> ServerConfig:
        lean = self.forward_auth.listen if self.forward_auth is not None else None
        if lean is not None:
            if lean[1] == 0:
                raise ValueError("server.forward_auth.listen needs a port of its own (not 0), e.g. 127.0.0.1:9091")
            if lean[1] in {address[1] for address in (self.listen, self.internal_listen) if address is not None}:
                raise ValueError(
                    "server.forward_auth.listen must use another port than server.listen and server.internal_listen"
                )
            if self.forward_auth.proxy == "envoy":
                raise ValueError(
                    "server.forward_auth.listen serves nginx, traefik and caddy; Envoy's ext_authz asks server.listen"
                )
        return self

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("public_url must be an absolute http(s) URL, e.g. https://safety.example.com")
        if parts.query or parts.fragment:
            raise ValueError("public_url must not carry a query or fragment")
        return value.rstrip("/")

    @field_validator("workers")
    @classmethod
    def _workers(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 256:
            raise ValueError("workers must be 'auto' or a number from 1 to 256")
        return value

    @field_validator("runtime_dir")
    @classmethod
    def _runtime_dir(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or "\0" in value):
            raise ValueError("runtime_dir must be a directory path")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"{value!r} is not a known time zone (e.g. Europe/Amsterdam)") from None
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an IP address or CIDR network") from None
        return value

    @property
    def worker_count(self) -> int:
        return (os.cpu_count() or 1) if self.workers == "auto" else int(self.workers)

    @property
    def public_host(self) -> str:
        return urlsplit(self.public_url).netloc

    @property
    def public_scheme(self) -> str:
        return urlsplit(self.public_url).scheme

    @property
    def secure_cookies(self) -> bool:
        """Secure cookies unless the public URL is plain http on a loopback address."""
        parts = urlsplit(self.public_url)
        if parts.scheme == "https":
            return True
        host = parts.hostname or ""
        if host == "localhost":
            return False
        try:
            return not ipaddress.ip_address(host).is_loopback
        except ValueError:
            return True

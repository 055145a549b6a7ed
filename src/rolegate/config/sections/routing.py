"""``upstreams`` and ``routes``."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from rolegate.config.types import Duration, Section

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class UpstreamConfig(Section):
    url: str
    timeout: Duration = timedelta(seconds=30)
    connect_timeout: Duration = timedelta(seconds=5)
    pool_size: int = Field(default=64, ge=1, le=10000)
    # Tokens minted for this upstream carry this audience (default: the upstream's name).
    audience: str | None = None
    # https:// only: PEM file of the CAs that may sign the upstream's certificate (a private
    # CA); without it the system's trust store. The certificate is always verified.
    ca_file: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("upstream url must be http(s)://host:port")
        if parts.query or parts.fragment:
            raise ValueError("upstream url must not carry a query or fragment")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _tls(self) -> "UpstreamConfig":
        if self.ca_file is not None and urlsplit(self.url).scheme != "https":
            raise ValueError("ca_file is for https:// upstreams")
        return self


class RedactConfig(Section):
    fields: tuple[str, ...]
    unless: str | None = None
    max_bytes: int = Field(default=1024 * 1024, ge=1)
    # A body the redaction cannot read (not JSON, over max_bytes, compressed, undecodable): `fail`
    # answers 502 with a reference id; `pass` relays it untouched, fields and all (logged either way).
    on_unredactable: Literal["fail", "pass"] = "fail"


class RouteConfig(Section):
    path: str
    methods: tuple[str, ...] | None = None
    host: str | None = None
    permission: str | None = None
    scope: str | None = None
    object: str | None = None
    upstream: str | None = None
    mode: Literal["enforce", "log", "authenticated", "public"] = "enforce"
    redact: RedactConfig | None = None
    name: str | None = None
    # What people call the page (a day pass's home lists the pages it opens by this title).
    title: str | None = Field(default=None, min_length=1, max_length=120)
    # A list the backend filters (GET /workorders): allowed when the caller holds the permission anywhere -
    # globally, at some scope or on an assigned object - and the assertion's ``where`` claim says where
    # (docs/tokens.md). Off: a route without a scope needs the permission globally.
    lists: bool = False

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("a route path starts with /")
        if value.startswith("/.rolegate/") or value == "/.rolegate" or value.startswith("/.well-known/jwks.json"):
            raise ValueError("/.rolegate/ and /.well-known/jwks.json are reserved for rolegate itself")
        return value

    @field_validator("title")
    @classmethod
    def _title(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)):
            raise ValueError("a route title is one line of text, e.g. Building dashboard")
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        upper = tuple(m.upper() for m in value)
        bad = [m for m in upper if m not in METHODS]
        if bad:
            raise ValueError(f"unknown HTTP methods {bad}")
        if not upper:
            raise ValueError("methods must list at least one method (leave it out for any method)")
        return upper

    @model_validator(mode="after")
    def _needs(self) -> "RouteConfig":
        if self.mode in ("enforce", "log") and self.permission is None and self.object is None:
            raise ValueError(f"a route in mode {self.mode!r} needs a permission")
        if self.upstream is None:
            raise ValueError("a route needs an upstream")
        if self.lists and (
            self.scope is not None
            or self.object is not None
            or self.permission is None
            or self.mode not in ("enforce", "log")
        ):
            raise ValueError(
                "lists: true is for a list route without scope or object, with a permission "
                "(mode enforce or log): the backend filters it with the assertion's where claim"
            )
        return self

"""``access_requests``: "Request access" on the 403 page, and how requests reach the people who may grant them.

Absent: the feature is off (the 403 page offers no button, the API answers 404). See docs/access-requests.md.

    access_requests:
      max_duration: 8h          # the longest access anyone may ask for (and an approver grant)
      expire_after: 3d          # a request nobody answered by then expires
      rate: 5/h                 # requests per user (a sliding window, shared through the Store)
      labels:                   # words for the 403 page and notifications (else derived: "Add documents")
        documents:add: Add documents
        building: "Building {id}"       # a scope type: {id} is the scope's id
        building:a: Building A          # one scope
      notify:
        webhook: {url: https://chat.example.com/hooks/rolegate, secret: "${file:/run/secrets/hook}"}
        email: {host: smtp.example.com, port: 587, security: starttls, from: rolegate@example.com,
                username: rolegate, password: "${SMTP_PASSWORD}"}
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from typing import Any, Callable, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from rolegate.config.sections.features import parse_rate
from rolegate.config.types import Duration, Section

_LABEL_TEMPLATE = re.compile(r"\{([^{}]*)\}")
_ADDRESS = re.compile(r"^[^@\s<>\"]+@[^@\s<>\"]+$")


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebhookConfig(Section):
    """A JSON POST per event (created, approved, denied, expired), signed with HMAC-SHA256 over
    ``<timestamp>.<body>`` (headers ``X-Rolegate-Timestamp``, ``X-Rolegate-Signature: sha256=<hex>``)."""

    url: str
    # At least 32 characters; the receiver keeps the same value to check the signature.
    secret: SecretStr
    # One attempt: no answer within this is a failure (retried).
    timeout: Duration = timedelta(seconds=5)
    # Attempts in all (1 = no retry); waits between them double from `backoff`, at most `max_backoff`.
    attempts: int = Field(default=5, ge=1, le=10)
    backoff: Duration = timedelta(seconds=1)
    max_backoff: Duration = timedelta(minutes=1)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL")
        if parts.username or parts.password:
            raise ValueError("put no credentials in the URL; the secret signs every call")
        if parts.scheme == "http" and not _loopback(parts.hostname):
            # Requests carry names and reasons: plain http only to a receiver on this machine.
            raise ValueError("use https (plain http only to a receiver on 127.0.0.1 / ::1 / localhost)")
        return value

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 32:
            raise ValueError("the webhook secret must be at least 32 characters (e.g. `openssl rand -base64 48`)")
        return value

    @field_validator("timeout", "backoff", "max_backoff")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if not timedelta(0) < value <= timedelta(hours=1):
            raise ValueError("must be more than 0s and at most 1h")
        return value


class EmailConfig(Section):
    """Mail to the approvers (and the requester's answer) over SMTP."""

    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    # starttls (default), tls (implicit, port 465) or none (only to a relay on this machine).
    security: Literal["starttls", "tls", "none"] = "starttls"
    sender: str = Field(alias="from")
    username: str | None = None
    password: SecretStr | None = None
    timeout: Duration = timedelta(seconds=10)

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        if not _ADDRESS.match(value):
            raise ValueError(f"{value!r} is not an e-mail address")
        return value

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: timedelta) -> timedelta:
        if not timedelta(0) < value <= timedelta(minutes=5):
            raise ValueError("must be more than 0s and at most 5m")
        return value

    def problems(self) -> list[tuple[tuple[Any, ...], str]]:
        out: list[tuple[tuple[Any, ...], str]] = []
        if self.security == "none" and not _loopback(self.host):
            out.append(
                (
                    ("host",),
                    "security: none sends mail (and a password) in clear: only to a relay on "
                    "127.0.0.1 / ::1 / localhost; use starttls or tls",
                )
            )
        if (self.username is None) != (self.password is None):
            out.append((("username",), "give both username and password, or neither"))
        return out


class NotifyConfig(Section):
    webhook: WebhookConfig | None = None
    email: EmailConfig | None = None


class AccessRequestsConfig(Section):
    """``access_requests:`` (optional): people refused a page may ask for access; see the module docstring."""

    max_duration: Duration = timedelta(hours=8)
    expire_after: Duration = timedelta(days=3)
    rate: str = "5/h"
    labels: dict[str, str] = Field(default_factory=dict)
    notify: NotifyConfig = NotifyConfig()

    @field_validator("max_duration")
    @classmethod
    def _max_duration(cls, value: timedelta) -> timedelta:
        if not timedelta(minutes=1) <= value <= timedelta(days=31):
            raise ValueError("max_duration must be between 1m and 31d (access granted on request ends by itself)")
        return value

    @field_validator("expire_after")
    @classmethod
    def _expire_after(cls, value: timedelta) -> timedelta:
        if not timedelta(minutes=5) <= value <= timedelta(days=90):
            raise ValueError("expire_after must be between 5m and 90d")
        return value

    @field_validator("rate")
    @classmethod
    def _rate(cls, value: str) -> str:
        parse_rate(value)
        return value

    @property
    def rate_limit(self) -> tuple[int, float]:
        """``rate`` as (requests, window seconds)."""
        return parse_rate(self.rate)

    def cross_check(
        self, catalogue: frozenset[str], scope_types: dict[str, Any], bad: Callable[[tuple[Any, ...], str], None]
    ) -> None:
        """Labels name known permissions, scope types or scopes of a declared type; e-mail settings agree."""
        base = ("access_requests",)
        for key, words in self.labels.items():
            path = (*base, "labels", key)
            kind, sep, rest = key.partition(":")
            if not (
                (sep and key in catalogue) or (not sep and key in scope_types) or (sep and kind in scope_types and rest)
            ):
                bad(path, f"{key!r} is no declared permission, scope type or scope (type:id) of a declared type")
            if not words.strip() or len(words) > 120 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in words):
                bad(path, "a label is one line of 1 to 120 characters")
            names = _LABEL_TEMPLATE.findall(words)
            if names and (sep or names != ["id"] * len(names)):
                bad(
                    path,
                    'only a scope type\'s label may hold a placeholder, and only {id} (e.g. building: "Building {id}")',
                )
        if self.notify.email is not None:
            for path, message in self.notify.email.problems():
                bad((*base, "notify", "email", *path), message)


__all__ = ["AccessRequestsConfig", "EmailConfig", "NotifyConfig", "WebhookConfig"]

"""``tokens``, ``daypass`` and ``audit``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator

from rolegate.config.types import Duration, Section, parse_duration


class TokensConfig(Section):
    """Upstream assertions and rolegate's own access tokens (see docs/tokens.md)."""

    algorithm: Literal["EdDSA", "ES256"] = "EdDSA"
    # Lifetime of upstream assertions and of access tokens from /.rolegate/token.
    lifetime: Duration = timedelta(minutes=5)
    # Longest life of a refresh-token family (also capped by the session or day pass it came from).
    refresh_lifetime: Duration = timedelta(hours=12)
    rotate_every: Duration = timedelta(days=7)
    # Encrypts signing keys at rest in the Store; defaults to session.secret when absent.
    key_secret: SecretStr | None = None
    # Send X-Rolegate-Assertion (and the plain identity headers) to upstreams.
    assertion: bool = True
    # Tolerated clock difference when checking exp/nbf/iat of rolegate's own tokens.
    clock_skew: Duration = timedelta(seconds=30)
    # Cached assertions per worker (per session, scope, permission version and upstream).
    assertion_cache_size: int = Field(default=10000, ge=0, le=10_000_000)

    @field_validator("lifetime")
    @classmethod
    def _lifetime(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=30) <= value <= timedelta(hours=1):
            raise ValueError("tokens.lifetime must be between 30s and 1h (tokens are meant to be short-lived)")
        return value

    @field_validator("rotate_every")
    @classmethod
    def _rotate_every(cls, value: timedelta) -> timedelta:
        if value < timedelta(hours=1):
            raise ValueError("tokens.rotate_every must be at least 1h")
        return value

    @field_validator("key_secret")
    @classmethod
    def _key_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("tokens.key_secret must be at least 32 characters (e.g. `openssl rand -base64 48`)")
        return value


class DaypassTemplate(Section):
    """What one kind of day pass grants: its role at one scope of an allowed type, for a bounded time."""

    role: str
    # Scope TYPES a pass of this template may be issued for, e.g. [building].
    scopes: tuple[str, ...]
    max_lifetime: Duration = timedelta(hours=24)
    # "end_of_day" (the next local midnight in ``timezone``) or a duration such as 8h; capped by max_lifetime.
    expires: str = "end_of_day"
    timezone: str = "UTC"
    devices: int = Field(default=1, ge=1, le=100)
    require: tuple[Literal["name", "company", "reason"], ...] = ("name", "company", "reason")
    description: str = ""
    # Where a browser goes after redeeming the pass: a path on public_url, where "{<scope type>}" is the
    # pass's scope id (/buildings/{building}/dashboard). Left out: the pass home, /.rolegate/pass/home.
    # `rolegate check` refuses a landing a pass of this template could not open.
    landing: str | None = None

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a known time zone (e.g. Europe/Amsterdam)") from None
        return value

    @field_validator("expires")
    @classmethod
    def _expires(cls, value: str) -> str:
        if value != "end_of_day":
            if parse_duration(value) <= timedelta(0):
                raise ValueError("expires must be end_of_day or a positive duration such as 8h")
        return value

    @field_validator("max_lifetime")
    @classmethod
    def _max_lifetime(cls, value: timedelta) -> timedelta:
        if not timedelta(minutes=1) <= value <= timedelta(days=31):
            raise ValueError("max_lifetime must be between 1m and 31d (a day pass is meant to be short-lived)")
        return value

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("list at least one scope type a pass may be issued for, e.g. [building]")
        return value

    @field_validator("landing")
    @classmethod
    def _landing(cls, value: str | None) -> str | None:
        # A path on our own host only: an open redirect after redemption would be a phishing aid.
        if value is None:
            return None
        if (
            not value.startswith("/")
            or value.startswith("//")
            or "\\" in value
            or "#" in value
            or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value)
        ):
            raise ValueError("landing must be a path on public_url, e.g. /buildings/{building}/dashboard")
        return value

    @model_validator(mode="after")
    def _landing_fills(self) -> "DaypassTemplate":
        # Every "{name}" must be fillable for every pass of this template: the id of its scope, so
        # only the scope type itself, and only when the template allows that one type.
        if self.landing is None:
            return self
        names = re.findall(r"\{([^{}]*)\}", self.landing)
        rest = re.sub(r"\{[^{}]*\}", "", self.landing)
        if "{" in rest or "}" in rest:
            raise ValueError(f"landing {self.landing!r}: unbalanced '{{' or '}}'")
        for name in names:
            if name not in self.scopes:
                raise ValueError(
                    f"landing {self.landing!r} names {{{name}}}; only the pass's scope id can be "
                    f"filled in: {', '.join('{' + s + '}' for s in self.scopes)}"
                )
            others = [s for s in self.scopes if s != name]
            if others:
                raise ValueError(
                    f"landing {self.landing!r} names {{{name}}}, which a pass for a {others[0]} "
                    f"cannot fill; leave landing out (passes land on their home page) or allow "
                    f"one scope type"
                )
        return self


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour|[0-9.]+(?:ms|s|m|h|d))\s*$")
_RATE_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}


def parse_rate(value: str) -> tuple[int, float]:
    """'10/min', '5/s', '100/h' or '20/10m' -> (hits, window seconds)."""
    m = _RATE.match(value)
    if m is None:
        raise ValueError(f"{value!r} is not a rate; write e.g. 10/min, 5/s or 20/10m")
    hits, unit = int(m.group(1)), m.group(2)
    window = _RATE_UNITS[unit] if unit in _RATE_UNITS else parse_duration(unit).total_seconds()
    if hits < 1 or window <= 0:
        raise ValueError(f"{value!r}: a rate needs at least 1 hit per a positive window")
    return hits, window


class DaypassConfig(Section):
    """``daypass:``: templates and how redemption is protected."""

    templates: dict[str, DaypassTemplate]
    # Shown on every "this pass no longer works" page.
    contact: str = "the person who gave you this pass"
    # Redemption attempts (page views and confirmations) per client address and per pass.
    redeem_rate: str = "10/min"
    # The browser cookie of a redeemed pass (sealed with session.secret).
    cookie_name: str = Field(default="rolegate_pass", pattern=r"^[A-Za-z0-9_\-]{1,64}$")

    @field_validator("redeem_rate")
    @classmethod
    def _redeem_rate(cls, value: str) -> str:
        parse_rate(value)
        return value

    @field_validator("templates")
    @classmethod
    def _templates(cls, value: dict[str, DaypassTemplate]) -> dict[str, DaypassTemplate]:
        if not value:
            raise ValueError("define at least one day-pass template")
        return value

    @property
    def rate(self) -> tuple[int, float]:
        """``redeem_rate`` as (hits, window seconds)."""
        return parse_rate(self.redeem_rate)


class AuditReads(Section):
    enabled: bool = True
    sample: float = Field(default=1.0, ge=0.0, le=1.0)


class AuditConfig(Section):
    sinks: tuple[str, ...] = ("store",)
    reads: AuditReads = AuditReads()
    durable_writes: bool = True
    retention: Duration | None = None
    # Signs the retention checkpoint (HMAC-SHA256); defaults to a key derived from session.secret.
    # Keep it stable: verify needs the key that signed the checkpoint in force.
    checkpoint_secret: SecretStr | None = None
    queue_size: int = Field(default=10000, ge=10)
    batch_size: int = Field(default=256, ge=1)
    # While the Store or a sink cannot be written (a full disk): "serve" keeps answering allowed reads
    # (counted in rolegate_audit_dropped_total when they cannot be kept), "refuse" answers them 503.
    # Writes and denials fail closed either way.
    on_failure: Literal["serve", "refuse"] = "serve"

    @field_validator("sinks")
    @classmethod
    def _sinks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for sink in value:
            if sink not in ("store", "stdout") and not (sink.startswith("jsonl:") and len(sink) > 6):
                raise ValueError(f"unknown audit sink {sink!r}; use store, stdout or jsonl:/path/file.jsonl")
        if "store" not in value:
            raise ValueError(
                "the store sink holds the hash chain and cannot be left out; list it first, e.g. [store, stdout]"
            )
        if len(set(value)) != len(value):
            raise ValueError("an audit sink is listed twice")
        return value

    @field_validator("retention")
    @classmethod
    def _retention(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(hours=1):
            raise ValueError("retention under 1h would prune events before anyone can read them; write e.g. 400d")
        return value

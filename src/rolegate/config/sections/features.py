"""``tokens``, ``daypass`` and ``audit``."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator

from rolegate.config.types import Duration, Section


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
    role: str
    scopes: tuple[str, ...]
    max_lifetime: Duration = timedelta(hours=24)
    expires: str = "end_of_day"
    timezone: str = "UTC"
    devices: int = Field(default=1, ge=1, le=100)
    require: tuple[Literal["name", "company", "reason"], ...] = ("name", "company", "reason")
    description: str = ""

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
        from rolegate.config.types import parse_duration

        if value != "end_of_day":
            parse_duration(value)
        return value


class DaypassConfig(Section):
    templates: dict[str, DaypassTemplate]
    contact: str = "the person who gave you this pass"
    redeem_rate: str = "10/min"


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

    @field_validator("sinks")
    @classmethod
    def _sinks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for sink in value:
            if sink not in ("store", "stdout") and not (sink.startswith("jsonl:") and len(sink) > 6):
                raise ValueError(f"unknown audit sink {sink!r}; use store, stdout or jsonl:/path/file.jsonl")
        if "store" not in value:
            raise ValueError("the store sink holds the hash chain and cannot be left out; "
                             "list it first, e.g. [store, stdout]")
        if len(set(value)) != len(value):
            raise ValueError("an audit sink is listed twice")
        return value

    @field_validator("retention")
    @classmethod
    def _retention(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(hours=1):
            raise ValueError("retention under 1h would prune events before anyone can read them; write e.g. 400d")
        return value

"""``storage``: the Store behind sessions, bindings, keys, day passes and audit."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, field_validator

from rolegate.config.types import Duration, Section

_SCHEMES = ("sqlite:", "postgresql:", "postgres:")


class StorageConfig(Section):
    url: str = "sqlite:///./var/rolegate.db"
    cache_url: str | None = None
    # How long decisions may be served from the last known state when the store is unreachable.
    max_staleness: Duration = timedelta(seconds=60)
    # PostgreSQL: connections per worker process (instances x workers x pool_size must fit max_connections).
    pool_size: int = Field(default=10, ge=1, le=200)
    # An unreachable server must fail a request quickly (StoreUnavailable), not hang it.
    connect_timeout: Duration = timedelta(seconds=2)
    command_timeout: Duration = timedelta(seconds=10)
    # Redis: every key rolegate writes starts with this, so several deployments can share one Redis.
    cache_prefix: str = "rolegate:"
    # Upper bound on how long a cached session may outlive a write that failed to invalidate it.
    cache_ttl: Duration = timedelta(seconds=30)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(_SCHEMES):
            raise ValueError("storage.url must start with sqlite:/// or postgresql://")
        return value

    @field_validator("cache_url")
    @classmethod
    def _cache_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("cache_url must be a redis:// or rediss:// URL")
        return value

    @field_validator("connect_timeout", "command_timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value.total_seconds() <= 0:
            raise ValueError("a timeout must be greater than zero")
        return value

    @property
    def is_postgres(self) -> bool:
        return self.url.startswith(("postgresql:", "postgres:"))

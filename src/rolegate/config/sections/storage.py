"""``storage``: the Store behind sessions, bindings, keys, day passes and audit."""

from __future__ import annotations

from datetime import timedelta

from pydantic import field_validator

from rolegate.config.types import Duration, Section

_SCHEMES = ("sqlite:", "postgresql:", "postgres:")


class StorageConfig(Section):
    url: str = "sqlite:///./var/rolegate.db"
    cache_url: str | None = None
    # How long decisions may be served from the last known state when the store is unreachable.
    max_staleness: Duration = timedelta(seconds=60)

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

"""``storage``: the Store behind sessions, bindings, keys, day passes and audit."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import PurePosixPath

from pydantic import Field, field_validator, model_validator

from rolegate.config.types import Duration, Section

_SCHEMES = ("sqlite:", "postgresql:", "postgres:")
# The data directory when neither storage.data_dir nor ROLEGATE_DATA names one: var/ beside the config file.
DEFAULT_DATA_DIR = "./var"
DATA_ENV = "ROLEGATE_DATA"


class StorageConfig(Section):
    # Where rolegate keeps its files (the default SQLite database, runtime files): storage.data_dir,
    # else $ROLEGATE_DATA (the image and the systemd unit set /var/lib/rolegate), else ./var; a
    # relative path is relative to the config file. `serve` refuses one it cannot write.
    data_dir: str | None = None
    # Unset: sqlite:///<data_dir>/rolegate.db (see _data_dir_and_url).
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

    @field_validator("data_dir")
    @classmethod
    def _data_dir(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or "\0" in value):
            raise ValueError("data_dir must be a directory path")
        return value

    @model_validator(mode="after")
    def _data_dir_and_url(self) -> "StorageConfig":
        # Resolved once, here: data_dir is always set after validation, and only the default url
        # follows it (an explicit url is taken as written).
        if self.data_dir is None:
            object.__setattr__(self, "data_dir", os.environ.get(DATA_ENV) or DEFAULT_DATA_DIR)
        if "url" not in self.model_fields_set:
            object.__setattr__(self, "url", f"sqlite:///{PurePosixPath(self.data_dir) / 'rolegate.db'}")
        return self

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

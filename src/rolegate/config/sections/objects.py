"""``scopes.<type>.lookup``: where rolegate asks the app where an object lies when the object directory does not
know it (a contract proposal, see docs/admin-api.md "Object directory").

    scopes:
      workorder:
        parent: customer
        lookup: {upstream: app, path: "/workorders/{id}/scope", ttl: 60s}

``GET <upstream><path>`` with ``{id}`` the object's id answers ``{"parent": "customer:c100"}`` (200), or 404 when
there is no such object. The answer is kept ``ttl`` (a "no such object" ``negative_ttl``), at most
``max_entries`` objects per worker, ``concurrency`` lookups at a time, each given ``timeout``. Anything else
(the upstream down, a timeout, a 5xx, garbage, a parent of the wrong type) refuses the request with the reason.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, field_validator

from rolegate.config.types import Duration, Section


class ObjectLookup(Section):
    upstream: str
    path: str
    ttl: Duration = timedelta(seconds=60)
    negative_ttl: Duration = timedelta(seconds=5)
    timeout: Duration = timedelta(seconds=2)
    max_entries: int = Field(default=10_000, ge=1, le=10_000_000)
    concurrency: int = Field(default=16, ge=1, le=1000)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or value.count("{id}") != 1 or "?" in value or "#" in value:
            raise ValueError('a lookup path starts with / and names the object id once, e.g. "/workorders/{id}/scope"')
        if any(part in value.replace("{id}", "") for part in ("{", "}")):
            raise ValueError("a lookup path takes only {id}")
        return value

    @field_validator("ttl", "timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value.total_seconds() <= 0:
            raise ValueError("must be longer than 0s")
        return value

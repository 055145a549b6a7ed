"""The admin API's operation table: one declaration per endpoint, read by the router and by OpenAPI."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # relative to /.rolegate/api/v1, with {name} parameters
    handler: Handler
    summary: str
    tag: str
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    media: str = "application/json"  # of the success response
    public: bool = False  # no sign-in needed (the OpenAPI document itself)
    etag: bool = False  # answers carry an ETag; updates need If-Match
    if_match: bool = False
    description: str = ""
    path_patterns: dict[str, str] = field(default_factory=dict)
    # Open to apps (``apps:`` callers): the object-directory writes. Every other operation answers an app 403.
    apps: bool = False


class Registry:
    def __init__(self) -> None:
        self.operations: list[Operation] = []

    def add(self, method: str, path: str, summary: str, tag: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.operations.append(Operation(method, path, handler, summary, tag, **kwargs))
            return handler

        return register

"""The part of asyncpg the PostgreSQL store uses, as types: asyncpg ships none (no stubs, no py.typed).

Only what rolegate calls is described, so a call outside it shows up in mypy instead of passing as Any.
Values read from the database stay ``Any``: their type is the column's, which only the SQL knows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol


class Row(Protocol):
    """An ``asyncpg.Record``: a column by position or name; ``dict(row)`` gives name -> value."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def keys(self) -> Iterable[str]: ...

    def __len__(self) -> int: ...


class Connection(Protocol):
    """An ``asyncpg.Connection``."""

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str: ...

    async def fetch(self, query: str, *args: Any, timeout: float | None = None) -> list[Row]: ...

    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None) -> Row | None: ...

    async def fetchval(self, query: str, *args: Any, column: int = 0, timeout: float | None = None) -> Any: ...

    def transaction(self) -> AbstractAsyncContextManager[object]: ...

    async def copy_records_to_table(
        self, table_name: str, *, records: Iterable[Sequence[Any]], columns: Sequence[str]
    ) -> str: ...

    async def set_type_codec(
        self, typename: str, *, schema: str, encoder: Callable[[Any], Any], decoder: Callable[[Any], Any]
    ) -> None: ...

    async def add_listener(self, channel: str, callback: Callable[[Connection, int, str, str], None]) -> None: ...

    def add_termination_listener(self, callback: Callable[[Connection], None]) -> None: ...

    def is_closed(self) -> bool: ...

    async def close(self, *, timeout: float | None = None) -> None: ...

    def terminate(self) -> None: ...


class Pool(Protocol):
    """An ``asyncpg.Pool`` (``await asyncpg.create_pool(...)``)."""

    def acquire(self, *, timeout: float | None = None) -> AbstractAsyncContextManager[Connection]: ...

    async def close(self) -> None: ...

    def terminate(self) -> None: ...

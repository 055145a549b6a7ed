"""The answer to "may this identity do this here?": allowed or not, and why."""

from __future__ import annotations

from operator import itemgetter
from typing import Any, Protocol

__all__ = ["Decision"]

_new = tuple.__new__


class _Reasoner(Protocol):
    def reasons(
        self, identity: Any, scope: str | None, at: float, permission: str, allowed: bool
    ) -> tuple[str, ...]: ...


class Decision(tuple[bool, str, str | None, tuple[str, ...] | None, float, float, _Reasoner | None, Any, float]):
    """An immutable decision. ``reasons`` are human-readable grants and denies.

    Decisions for the same identity shape, scope and permission are shared (the
    engine memoizes them), so the engine leaves the reasons to be worked out when
    first read: it passes a ``reasoner`` (the policy's binding index), the identity
    and the time instead. A tuple underneath, so that making one is a single
    allocation: the first decision for a new (user, scope) stays under a microsecond.
    """

    __slots__ = ()

    # Read straight from the tuple (no per-instance storage); mypy sees the property objects, hence the ignores.
    allowed: bool = property(itemgetter(0))  # type: ignore[assignment]
    permission: str = property(itemgetter(1))  # type: ignore[assignment]
    scope: str | None = property(itemgetter(2))  # type: ignore[assignment]
    # The window in which a memoized decision still holds (bindings with until).
    not_before: float = property(itemgetter(4))  # type: ignore[assignment]
    expires: float = property(itemgetter(5))  # type: ignore[assignment]

    def __new__(
        cls,
        allowed: bool,
        permission: str,
        scope: str | None,
        reasons: tuple[str, ...] | None = None,
        not_before: float = 0.0,
        expires: float = 0.0,
        reasoner: _Reasoner | None = None,
        identity: Any = None,
        at: float = 0.0,
    ) -> Decision:
        return _new(cls, (allowed, permission, scope, reasons, not_before, expires, reasoner, identity, at))

    @property
    def reasons(self) -> tuple[str, ...]:
        reasons = self[3]
        if reasons is not None:
            return reasons
        reasoner = self[6]
        if reasoner is None:
            return ()
        return reasoner.reasons(self[7], self[2], self[8], self[1], self[0])

    def __bool__(self) -> bool:
        return self[0]

    def __repr__(self) -> str:
        verdict = "allow" if self[0] else "deny"
        return f"<Decision {verdict} {self[1]} at {self[2] or '(global)'}>"

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle/copy the answer and its reasons, not the policy index behind them.
        return (Decision, (self[0], self[1], self[2], self.reasons, self[4], self[5]))

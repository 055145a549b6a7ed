"""The answer to "may this identity do this here?": allowed or not, and why."""

from __future__ import annotations

from typing import Protocol

__all__ = ["Decision"]


class _Reasoner(Protocol):
    def reasons_for(self, permission: str, allowed: bool) -> tuple[str, ...]: ...


class Decision:
    """An immutable decision. ``reasons`` are human-readable grants and denies.

    Decisions for the same identity shape, scope and permission are shared (the
    engine memoizes them), so reasons are worked out only when first read.
    """

    __slots__ = ("allowed", "permission", "scope", "_reasons", "_reasoner", "_not_before", "_expires")

    allowed: bool
    permission: str
    scope: str | None

    def __init__(self, allowed: bool, permission: str, scope: str | None,
                 reasons: tuple[str, ...] | None = None, reasoner: _Reasoner | None = None,
                 not_before: float = 0.0, expires: float = 0.0) -> None:
        set_ = object.__setattr__
        set_(self, "allowed", allowed)
        set_(self, "permission", permission)
        set_(self, "scope", scope)
        set_(self, "_reasons", reasons)
        set_(self, "_reasoner", reasoner)
        # The window in which a memoized decision still holds (bindings with until).
        set_(self, "_not_before", not_before)
        set_(self, "_expires", expires)

    @property
    def reasons(self) -> tuple[str, ...]:
        reasons = self._reasons
        if reasons is None:
            reasoner = self._reasoner
            reasons = reasoner.reasons_for(self.permission, self.allowed) if reasoner is not None else ()
            object.__setattr__(self, "_reasons", reasons)
            object.__setattr__(self, "_reasoner", None)
        return reasons

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Decision is immutable")

    def __bool__(self) -> bool:
        return self.allowed

    def __repr__(self) -> str:
        verdict = "allow" if self.allowed else "deny"
        return f"<Decision {verdict} {self.permission} at {self.scope or '(global)'}>"

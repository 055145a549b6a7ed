"""The answer to "may this identity do this here?": allowed or not, and why."""

from __future__ import annotations

from typing import Protocol

__all__ = ["Decision"]


class _Reasoner(Protocol):
    def reasons_for(self, permission: str, allowed: bool) -> tuple[str, ...]: ...


class _Fields:
    __slots__ = ("allowed", "permission", "scope", "_reasons", "_reasoner", "_not_before", "_expires")


# Slot descriptors of the base: setting through them skips Decision.__setattr__ (which refuses).
_set_allowed = _Fields.allowed.__set__  # type: ignore[attr-defined]
_set_permission = _Fields.permission.__set__  # type: ignore[attr-defined]
_set_scope = _Fields.scope.__set__  # type: ignore[attr-defined]
_set_reasons = _Fields._reasons.__set__  # type: ignore[attr-defined]
_set_reasoner = _Fields._reasoner.__set__  # type: ignore[attr-defined]
_set_not_before = _Fields._not_before.__set__  # type: ignore[attr-defined]
_set_expires = _Fields._expires.__set__  # type: ignore[attr-defined]


class Decision(_Fields):
    """An immutable decision. ``reasons`` are human-readable grants and denies.

    Decisions for the same identity shape, scope and permission are shared (the
    engine memoizes them), so reasons are worked out only when first read.
    """

    __slots__ = ()

    allowed: bool
    permission: str
    scope: str | None

    def __init__(self, allowed: bool, permission: str, scope: str | None,
                 reasons: tuple[str, ...] | None = None, reasoner: _Reasoner | None = None,
                 not_before: float = 0.0, expires: float = 0.0) -> None:
        _set_allowed(self, allowed)
        _set_permission(self, permission)
        _set_scope(self, scope)
        _set_reasons(self, reasons)
        _set_reasoner(self, reasoner)
        # The window in which a memoized decision still holds (bindings with until).
        _set_not_before(self, not_before)
        _set_expires(self, expires)

    @property
    def reasons(self) -> tuple[str, ...]:
        reasons = self._reasons
        if reasons is None:
            reasoner = self._reasoner
            reasons = reasoner.reasons_for(self.permission, self.allowed) if reasoner is not None else ()
            _set_reasons(self, reasons)
            _set_reasoner(self, None)
        return reasons

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Decision is immutable")

    def __bool__(self) -> bool:
        return self.allowed

    def __repr__(self) -> str:
        verdict = "allow" if self.allowed else "deny"
        return f"<Decision {verdict} {self.permission} at {self.scope or '(global)'}>"

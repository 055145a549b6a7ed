"""The Principal of a day-pass holder: no groups, only the pass (authz maps it to a ``daypass`` subject)."""

from __future__ import annotations

from rolegate.identity.principal import Principal


class DaypassPrincipal(Principal):
    """A Principal with ``auth="daypass"`` and the pass id the authz Identity is built from."""

    __slots__ = ("daypass_id", "company", "scope")

    def __init__(
        self, *, pass_id: str, name: str, company: str, scope: str, session_id: str, expires_at: float
    ) -> None:
        super().__init__(
            username=f"daypass:{pass_id}",
            name=name,
            groups=frozenset(),
            session_id=session_id,
            auth="daypass",
            expires_at=expires_at,
        )
        self.daypass_id = pass_id
        self.company = company
        self.scope = scope

    def __repr__(self) -> str:
        return f"<DaypassPrincipal {self.daypass_id} {self.name!r} ({self.company}) at {self.scope}>"

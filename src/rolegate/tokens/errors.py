"""Errors of the token stage, as HTTP answers (RFC 6750 §3 for bearer tokens, RFC 6749 §5.2 for grants)."""

from __future__ import annotations

from rolegate.errors import TokenStale

STALE_DESCRIPTION = "permissions changed; refresh the token"


class StaleToken(TokenStale):
    """A rolegate access token minted under an older permission version: 401, refresh and retry."""

    bearer_error = "invalid_token"
    bearer_error_description = STALE_DESCRIPTION
    # Never redirect a bearer client to a login page.
    login_url = None

    @property
    def www_authenticate(self) -> str:
        return (
            f'Bearer realm="rolegate", error="{self.bearer_error}", error_description="{self.bearer_error_description}"'
        )


class GrantError(Exception):
    """An OAuth error response from the token endpoint: ``{"error": code, "error_description": ...}``.

    ``description`` is all the client learns; ``detail`` (why, for the log and the audit trail) and
    ``user`` (whom the refused grant was for, when known) never reach it.
    """

    def __init__(
        self, code: str, description: str, *, status: int = 400, detail: str | None = None, user: str | None = None
    ) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.status = status
        self.detail = detail or description
        self.user = user

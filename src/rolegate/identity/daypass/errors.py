"""Day-pass errors: each is an HTTP answer with a safe public message (rolegate.errors)."""

from __future__ import annotations

from rolegate.errors import BadRequest, Forbidden, NotFound
from rolegate.identity.errors import SignInRequired


class IssueRefused(Forbidden):
    """The issuer may not issue this pass (not their scope, or not the template's)."""

    code = "daypass_issue_refused"
    public_message = "You may not issue this day pass."


class InvalidPassRequest(BadRequest):
    """A field of an issue request is missing or malformed."""

    code = "daypass_invalid"
    public_message = "The day pass request is incomplete or invalid."


class PassNotFound(NotFound):
    code = "daypass_not_found"
    public_message = "No such day pass."


class PassEnded(SignInRequired):
    """A pass session whose pass expired or was revoked: a clear page, never a sign-in redirect."""

    code = "daypass_ended"

    def __init__(self, detail: str, *, public_message: str, kind: str = "invalid") -> None:
        super().__init__(detail, login_url=None)
        self.public_message = public_message
        # How it ended (the key of its page in pages.py): invalid, expired, revoked or used_up.
        self.kind = kind

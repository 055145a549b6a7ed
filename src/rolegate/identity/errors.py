"""Identity errors: what a browser or API client is told when sign-in or a credential fails."""

from __future__ import annotations

from rolegate.errors import BadRequest, Forbidden, ServiceUnavailable, Unauthenticated


class SignInRequired(Unauthenticated):
    """No (valid) credential: browsers are sent to sign in, APIs get 401 + WWW-Authenticate."""

    code = "unauthenticated"

    def __init__(self, detail: str = "", *, login_url: str | None = None, bearer_error: str | None = None) -> None:
        super().__init__(detail)
        # Where a browser should go to sign in (None: never redirect, e.g. a bad bearer token).
        self.login_url = login_url
        # RFC 6750 error code for WWW-Authenticate ("invalid_token"), when a token was presented.
        self.bearer_error = bearer_error


class ProviderUnavailable(ServiceUnavailable):
    code = "sign_in_unavailable"
    public_message = "The company sign-in service cannot be reached right now. Please try again in a moment."


class SignInFailed(BadRequest):
    code = "sign_in_failed"
    public_message = "The sign-in could not be completed. Please start again."


class AccountDisabled(Forbidden):
    code = "account_disabled"
    public_message = "Your account is disabled. Contact your administrator if you think this is a mistake."

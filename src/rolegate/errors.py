"""One exception hierarchy for rolegate.

Every member knows its HTTP status and a safe public message. Internal detail
(``detail``) goes to logs and audit only, never to the client.
"""

from __future__ import annotations

import secrets


class RolegateError(Exception):
    """Base of every error rolegate raises on purpose."""

    status: int = 500
    code: str = "internal_error"
    public_message: str = "Something went wrong inside the access proxy."

    def __init__(self, detail: str = "", *, public_message: str | None = None) -> None:
        super().__init__(detail or self.public_message)
        self.detail = detail
        if public_message is not None:
            self.public_message = public_message
        # A reference the user can quote to ops; the same id is logged with the detail.
        self.reference = secrets.token_hex(6)


class ConfigError(RolegateError):
    """The configuration is invalid. Raised at load time, never at request time."""

    code = "config_error"
    public_message = "The access proxy is misconfigured."

    def __init__(self, problems: list[str] | str) -> None:
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class BadRequest(RolegateError):
    status = 400
    code = "bad_request"
    public_message = "The request could not be understood."


class AmbiguousPath(BadRequest):
    code = "ambiguous_path"
    public_message = "The request path is not acceptable."


class PayloadTooLarge(RolegateError):
    status = 413
    code = "payload_too_large"
    public_message = "The request body is too large."


class HeadersTooLarge(RolegateError):
    status = 431
    code = "headers_too_large"
    public_message = "The request headers are too large."


class Unauthenticated(RolegateError):
    status = 401
    code = "unauthenticated"
    public_message = "Sign-in is required."


class TokenStale(Unauthenticated):
    code = "token_stale"
    public_message = "The token's permissions are out of date; refresh it."


class Forbidden(RolegateError):
    status = 403
    code = "forbidden"
    public_message = "You do not have access to this page."


class NotFound(RolegateError):
    status = 404
    code = "not_found"
    public_message = "Not found."


class MethodNotAllowed(RolegateError):
    status = 405
    code = "method_not_allowed"
    public_message = "This method is not allowed here."


class TooManyRequests(RolegateError):
    status = 429
    code = "too_many_requests"
    public_message = "Too many attempts; wait a moment and try again."


class UpstreamUnavailable(RolegateError):
    status = 502
    code = "bad_gateway"
    public_message = "The application behind the access proxy is not reachable."


class UpstreamTimeout(RolegateError):
    status = 504
    code = "gateway_timeout"
    public_message = "The application behind the access proxy did not answer in time."


class ServiceUnavailable(RolegateError):
    status = 503
    code = "unavailable"
    public_message = "The access proxy cannot serve this request right now."

"""Admin API errors: exceptions that *are* the JSON answer (status, code, message, field errors)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


class AdminError(Exception):
    """An answer the admin API gives on purpose; never carries internal detail."""

    status = 400
    code = "bad_request"

    def __init__(
        self, message: str, *, errors: list[dict[str, str]] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors
        self.headers = headers or {}

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


class Unauthorized(AdminError):
    status, code = 401, "unauthenticated"


class Denied(AdminError):
    status, code = 403, "forbidden"


class Missing(AdminError):
    status, code = 404, "not_found"


class Conflict(AdminError):
    status, code = 409, "conflict"


class PreconditionFailed(AdminError):
    status, code = 412, "precondition_failed"


class PreconditionRequired(AdminError):
    status, code = 428, "precondition_required"


class Invalid(AdminError):
    status, code = 422, "invalid"

    def __init__(self, errors: list[dict[str, str]]) -> None:
        fields = ", ".join(e["field"] for e in errors) or "the request"
        super().__init__(f"invalid value for {fields}", errors=errors)

    @classmethod
    def field(cls, field: str, message: str) -> "Invalid":
        return cls([{"field": field, "message": message}])


def field_path(loc: tuple[Any, ...]) -> str:
    """pydantic's ``loc`` as one readable name: ``permissions[2]``, ``holder.name``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


def from_validation(exc: ValidationError, prefix: str = "") -> Invalid:
    errors = []
    for err in exc.errors(include_url=False, include_input=False):
        # Model-level validators have an empty loc: the message names the fields itself.
        name = field_path(tuple(err.get("loc", ())))
        errors.append(
            {
                "field": f"{prefix}{name}" if prefix and name != "body" else name,
                "message": str(err.get("msg", "invalid")),
            }
        )
    return Invalid(errors)

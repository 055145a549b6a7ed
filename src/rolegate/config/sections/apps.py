"""``apps``: machine callers (a field-service backend) that write the object directory through the admin API.

Optional (absent: no app credential is accepted). A contract proposal, see docs/admin-api.md#apps.

    apps_audience: urn:rolegate:apps      # default aud of the IdP access tokens apps present
    apps:
      fieldservice:
        description: The field-service backend
        client_id: fieldservice           # OAuth client-credentials at the IdP (a JWT access token)
        audience: urn:rolegate:apps       # optional; default apps_audience
        api_keys: true                    # may use rolegate-issued keys (rolegate apps key create)
        may:
          place: [workorder, customer]    # object types it may place in the directory (scope members)
          assign: [workorder]             # object types whose assignments it may write

An app is never a person: it holds no role, and may call only the object-directory endpoints, for the
object types listed under ``may``.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from pydantic import Field

from rolegate.config.types import Section

APP_NAME = re.compile(r"^[a-z][a-z0-9_\-]{0,62}$")
_CLIENT_ID = re.compile(r"^[\x21-\x7e]{1,200}$")


class AppMay(Section):
    """What an app may write, per object type."""

    place: tuple[str, ...] = ()
    assign: tuple[str, ...] = ()


class AppConfig(Section):
    description: str = ""
    client_id: str | None = None
    audience: str | None = None
    api_keys: bool = False
    may: AppMay = Field(default_factory=AppMay)


def cross_check_apps(
    apps: dict[str, AppConfig],
    apps_audience: str | None,
    *,
    oidc: Any,
    scopes: dict[str, Any],
    bad: Callable[[tuple[Any, ...], str], None],
) -> None:
    """Names, credentials and object types of ``apps``; problems reported through ``bad(path, message)``."""
    if apps_audience is not None:
        _check_audience(("apps_audience",), apps_audience, oidc, bad)
    clients: dict[str, str] = {}
    for name, app in apps.items():
        if not APP_NAME.match(name):
            bad(
                ("apps", name),
                f"{name!r} is not a valid app name (lower case letters, digits, - and _; it is audited as app:<name>)",
            )
        if app.client_id is None and not app.api_keys:
            bad(
                ("apps", name),
                "an app needs a credential: client_id (OAuth client credentials at the IdP) "
                "and/or api_keys: true (rolegate apps key create)",
            )
        if app.audience is not None and app.client_id is None:
            bad(("apps", name, "audience"), "audience applies to IdP access tokens: set client_id too")
        if app.client_id is not None:
            if not _CLIENT_ID.match(app.client_id):
                bad(("apps", name, "client_id"), "not a valid OAuth client_id")
            elif app.client_id in clients:
                bad(
                    ("apps", name, "client_id"),
                    f"client_id {app.client_id!r} is already app {clients[app.client_id]!r}'s",
                )
            else:
                clients[app.client_id] = name
            if oidc is None:
                bad(("apps", name, "client_id"), "client_id needs the oidc section (the IdP that issues the tokens)")
            elif app.client_id == oidc.client_id:
                bad(
                    ("apps", name, "client_id"),
                    f"{app.client_id!r} is rolegate's own client at the IdP; register the app as a client of its own",
                )
            if app.audience is None and apps_audience is None:
                bad(
                    ("apps", name, "client_id"),
                    "no audience for the app's tokens: set apps_audience (or audience on the app)",
                )
            elif app.audience is not None:
                _check_audience(("apps", name, "audience"), app.audience, oidc, bad)
        for verb, wanted in (("place", app.may.place), ("assign", app.may.assign)):
            for i, type_ in enumerate(wanted):
                declared = scopes.get(type_)
                if declared is None:
                    bad(("apps", name, "may", verb, i), f"unknown object type {type_!r} (declare it under scopes:)")
                elif verb == "place" and declared.parent is None:
                    bad(
                        ("apps", name, "may", verb, i), f"{type_!r} has no parent type, so there is nowhere to place it"
                    )
        if not app.may.place and not app.may.assign:
            bad(("apps", name, "may"), "the app may write nothing: list object types under may.place and/or may.assign")


def _check_audience(
    path: tuple[Any, ...], audience: str, oidc: Any, bad: Callable[[tuple[Any, ...], str], None]
) -> None:
    if not audience.strip():
        bad(path, "an audience cannot be empty")
        return
    if oidc is None:
        return
    if audience in oidc.access_token_audience:
        bad(
            path,
            f"{audience!r} is also in oidc.access_token_audience: apps need an audience of their own, "
            "or a user's token would be presented where an app's is expected",
        )
    if audience == oidc.client_id:
        bad(path, f"{audience!r} is rolegate's client_id (the audience of ID tokens); choose another")

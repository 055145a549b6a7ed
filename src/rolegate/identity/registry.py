"""Authenticators by name, in the order they are asked (Oathkeeper's ``registry.go``).

Bearer-token authenticators come first when an Authorization header is present; the tokens
issue registers ``rolegate_token`` here (``authenticator_rolegate_token.py``) ahead of
``idp_access_token``, and each bearer authenticator returns None for tokens it did not issue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rolegate.identity.authenticator import Authenticator

if TYPE_CHECKING:
    from rolegate.identity.stage import IdentityStage

# Builds a stage's authenticator of one kind; None when its config section is absent.
Factory = Callable[["IdentityStage"], Authenticator | None]
# name -> (factory, order)
_REGISTRY: dict[str, tuple[Factory, int]] = {}


def register(name: str, order: int) -> Callable[[Factory], Factory]:
    """Decorator: make an authenticator factory available under ``name`` (lower ``order`` asked first)."""

    def deco(factory: Factory) -> Factory:
        _REGISTRY[name] = (factory, order)
        return factory

    return deco


def build_authenticators(stage: "IdentityStage") -> list[Authenticator]:
    """Every registered authenticator that the config enables, in order."""
    # Importing the modules registers them; here, not at the top: each imports ``register`` from this module.
    from rolegate.identity import (  # noqa: F401
        authenticator_cookie_session,
        authenticator_idp_access_token,
        authenticator_rolegate_token,
    )
    from rolegate.identity.daypass import authenticator_daypass_session  # noqa: F401  (day passes, issue 7)

    chain: list[Authenticator] = []
    for _name, (factory, _order) in sorted(_REGISTRY.items(), key=lambda item: item[1][1]):
        authenticator = factory(stage)
        if authenticator is not None:
            chain.append(authenticator)
    return chain

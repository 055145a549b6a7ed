"""rolegate's local SSO lab: a private slapd, the company OIDC provider and an example backend."""
from __future__ import annotations

from .errors import LabError
from .ports import free_port
from .backend import Backend
from .browser import CallbackRedirect, LoginFailed, idp_login, idp_login_sync, idp_logout, lab_client_session
from .idp import DEFAULT_AUDIENCE, IdP, rolegate_client
from .slapd import Slapd

__all__ = ["Backend", "LabError", "Slapd", "free_port"]

"""rolegate's local SSO lab: a private slapd, the company OIDC provider and an example backend.

Import after ``sys.path.insert(0, "<repo>/deploy/lab")`` (tests/conftest.py does it).
"""
from __future__ import annotations

from .backend import Backend
from .browser import CallbackRedirect, LoginFailed, idp_login, idp_login_sync, idp_logout, lab_client_session
from .company import DemoUser, demo_users
from .errors import LabError
from .idp import DEFAULT_AUDIENCE, IdP, rolegate_client
from .lab import Lab
from .launcher import Launcher
from .ports import free_port
from .slapd import Slapd

__all__ = [
    "DEFAULT_AUDIENCE", "Backend", "CallbackRedirect", "DemoUser", "IdP", "Lab", "LabError", "Launcher",
    "LoginFailed", "Slapd", "demo_users", "free_port", "idp_login", "idp_login_sync",
    "idp_logout", "lab_client_session", "rolegate_client",
]

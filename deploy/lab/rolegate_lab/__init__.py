"""rolegate's local SSO lab: a private slapd, the company OIDC provider and an example backend."""
from __future__ import annotations

from .errors import LabError
from .ports import free_port
from .slapd import Slapd

__all__ = ["LabError", "Slapd", "free_port"]

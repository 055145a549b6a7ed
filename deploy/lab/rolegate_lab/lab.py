"""The whole lab at once: seeded slapd, the company IdP with a rolegate client, the example backend."""
from __future__ import annotations

import json
import secrets
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .backend import Backend
from .company import demo_users
from .idp import APPS_AUDIENCE, FIELDSERVICE_CLIENT_ID, IdP, app_client, rolegate_client
from .ports import free_port
from .slapd import DEMO_PASSWORD, Slapd


class Lab:
    """Slapd (seeded) + IdP + Backend under one work dir.

    ``rolegate_url`` is where rolegate will listen (its callback is registered with
    the IdP); when omitted a free port is reserved and ``rolegate_url`` says which.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        rolegate_url: str | None = None,
        client_secret: str | None = None,
        extra_clients: Iterable[Mapping[str, Any]] = (),
        slapd_port: int | None = None,
        idp_port: int | None = None,
        backend_port: int | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.rolegate_url = (rolegate_url or f"http://127.0.0.1:{free_port()}").rstrip("/")
        self.client_secret = client_secret or secrets.token_urlsafe(24)
        # the field-service backend is an app of rolegate's (apps.fieldservice): its own IdP client, which
        # gets JWT access tokens for APPS_AUDIENCE with the client-credentials grant
        self.app_secret = secrets.token_urlsafe(24)
        self.slapd = Slapd(self.workdir / "slapd", port=slapd_port)
        self.idp = IdP(
            self.workdir / "idp",
            ldap_url=self.slapd.url,
            ldap_base_dn=self.slapd.base_dn,
            clients=[rolegate_client(self.rolegate_url, self.client_secret),
                     app_client(FIELDSERVICE_CLIENT_ID, self.app_secret), *extra_clients],
            port=idp_port,
            extra_resources=[APPS_AUDIENCE],
        )
        self.backend = Backend(self.workdir / "backend", port=backend_port, env=self.app_env())

    def app_env(self) -> dict[str, str]:
        """The backend's credential for rolegate's admin API (rolegate_lab/app_credential.py reads it)."""
        return {"ROLEGATE_ADMIN_URL": self.rolegate_url, "ROLEGATE_APP_CLIENT_ID": FIELDSERVICE_CLIENT_ID,
                "ROLEGATE_APP_CLIENT_SECRET": self.app_secret, "ROLEGATE_APP_TOKEN_URL": f"{self.idp.url}/token",
                "ROLEGATE_APP_RESOURCE": APPS_AUDIENCE}

    def start(self) -> "Lab":
        try:
            self.slapd.start()
            self.idp.ldap_url = self.slapd.url  # the port may have moved on a lost race
            self.idp.start()
            self.backend.env.update(self.app_env())  # the IdP's port too
            self.backend.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for component in (self.idp, self.backend, self.slapd):
            component.stop()

    def __enter__(self) -> "Lab":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def info(self) -> dict[str, Any]:
        """What a client of the lab needs: URLs, ports, credentials (lab-only secrets)."""
        client = self.idp.client()
        return {
            "rolegate_url": self.rolegate_url,
            "ldap": {
                "url": self.slapd.url, "port": self.slapd.port, "base_dn": self.slapd.base_dn,
                "people_base": f"ou=people,{self.slapd.base_dn}", "groups_base": f"ou=groups,{self.slapd.base_dn}",
                "bind_dn": self.slapd.service_dn, "bind_password": self.slapd.service_password,
                "admin_dn": self.slapd.admin_dn, "admin_password": self.slapd.admin_password,
            },
            "oidc": {
                "issuer": self.idp.issuer, "port": self.idp.port,
                "discovery": f"{self.idp.issuer}/.well-known/openid-configuration",
                "client_id": client["client_id"], "client_secret": client["client_secret"],
                "redirect_uri": client["redirect_uris"][0],
                "post_logout_redirect_uris": client["post_logout_redirect_uris"],
                "backchannel_logout_uri": client["backchannel_logout_uri"],
                "access_token_audience": self.idp.audience,
                "apps_audience": APPS_AUDIENCE,
                "app_client_id": FIELDSERVICE_CLIENT_ID, "app_client_secret": self.app_secret,
            },
            "backend": {"url": self.backend.url, "port": self.backend.port},
            "demo_password": DEMO_PASSWORD,
            "users": [
                {"uid": u.uid, "name": u.name, "title": u.title, "groups": list(u.groups), "disabled": u.disabled}
                for u in demo_users()
            ],
        }

    def env(self) -> dict[str, str]:
        """Environment variables for ``${ENV}`` in a rolegate config pointed at the lab."""
        info = self.info()
        return {
            "ROLEGATE_PUBLIC_URL": self.rolegate_url,
            "ROLEGATE_OIDC_ISSUER": info["oidc"]["issuer"],
            "ROLEGATE_OIDC_SECRET": info["oidc"]["client_secret"],
            "LAB_LDAP_URL": info["ldap"]["url"],
            "LDAP_PASSWORD": info["ldap"]["bind_password"],
            "LAB_BACKEND_URL": info["backend"]["url"],
            "ROLEGATE_APPS_AUDIENCE": APPS_AUDIENCE,
        }

    def write_info(self) -> tuple[Path, Path]:
        """Write ``lab.json`` and ``lab.env`` (shell exports) into the work dir, owner-readable only."""
        json_path, env_path = self.workdir / "lab.json", self.workdir / "lab.env"
        json_path.write_text(json.dumps(self.info(), indent=2) + "\n")
        env_path.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.env().items()))
        for path in (json_path, env_path):
            path.chmod(0o600)
        return json_path, env_path

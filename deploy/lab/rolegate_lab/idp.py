"""The lab's company OpenID Connect provider: oidc-provider (Node) authenticating against slapd."""
from __future__ import annotations

import json
import secrets
import shutil
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import LabError
from .process import LabProcess
from .slapd import SERVICE_DN, SERVICE_PASSWORD

IDP_DIR = Path(__file__).resolve().parent.parent / "idp"
#: ``aud`` of the JWT access tokens a plain code flow gets (RFC 8707 default resource)
DEFAULT_AUDIENCE = "urn:rolegate:api"
ROLEGATE_CLIENT_ID = "rolegate"
#: ``aud`` of the client-credentials tokens the lab's apps get (rolegate's ``apps_audience``)
APPS_AUDIENCE = "urn:rolegate:apps"
#: the field-service backend's client at the IdP (rolegate's ``apps.fieldservice.client_id``)
FIELDSERVICE_CLIENT_ID = "fieldservice"
#: where rolegate may send the browser back after the IdP signed it out
POST_LOGOUT_PATHS = ("/", "/.rolegate/logout", "/.rolegate/logout/done", "/.rolegate/logged-out")


def rolegate_client(rolegate_url: str, client_secret: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Client metadata for rolegate at ``rolegate_url`` (callback, logout and back-channel URIs)."""
    base = rolegate_url.rstrip("/")
    client: dict[str, Any] = {
        "client_id": ROLEGATE_CLIENT_ID,
        "client_secret": client_secret or secrets.token_urlsafe(24),
        "redirect_uris": [f"{base}/.rolegate/callback"],
        "post_logout_redirect_uris": [f"{base}{p}" for p in POST_LOGOUT_PATHS],
        "backchannel_logout_uri": f"{base}/.rolegate/logout/backchannel",
        "backchannel_logout_session_required": True,
    }
    client.update(overrides)
    return client


def app_client(client_id: str, client_secret: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Client metadata for an app (a machine) that gets its tokens with the client-credentials grant only."""
    client: dict[str, Any] = {"client_id": client_id, "client_secret": client_secret or secrets.token_urlsafe(24),
                              "grant_types": ["client_credentials"], "response_types": [], "redirect_uris": []}
    client.update(overrides)
    return client


def client_credentials_token(idp: "IdP", client_id: str, resource: str | None, *, secret: str | None = None,
                             timeout: float = 10) -> dict[str, Any]:
    """The token response of the client-credentials grant (``resource``: the audience asked for, RFC 8707).

    Raises LabError with the IdP's error answer when the grant is refused."""
    import base64
    import urllib.error
    import urllib.parse

    data = {"grant_type": "client_credentials"}
    if resource:
        data["resource"] = resource
    secret = secret if secret is not None else idp.client(client_id)["client_secret"]
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    request = urllib.request.Request(idp.discovery["token_endpoint"], data=urllib.parse.urlencode(data).encode(),
                                     headers={"Authorization": f"Basic {basic}",
                                              "Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        raise LabError(f"client-credentials grant for {client_id!r} refused: {exc.code} {exc.read()[:300]!r}") from None


def _client_metadata(client: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """oidc-provider metadata with lab defaults, and whether PKCE is required."""
    machine = list(client.get("grant_types") or ()) == ["client_credentials"]
    if "client_id" not in client or not (client.get("redirect_uris") or machine):
        raise LabError(f"an IdP client needs client_id and redirect_uris: {dict(client)!r}")
    meta = dict(client)
    require_pkce = bool(meta.pop("require_pkce", True))
    meta.setdefault("grant_types", ["authorization_code", "refresh_token"])
    meta.setdefault("response_types", ["code"])
    meta.setdefault("id_token_signed_response_alg", "ES256")
    if "client_secret" not in meta:
        meta.setdefault("token_endpoint_auth_method", "none")
    return meta, require_pkce


class IdP(LabProcess):
    """oidc-provider on ``http://127.0.0.1:<port>`` (``url`` is the issuer).

    ``clients`` are oidc-provider client metadata dicts; ``require_pkce: False``
    exempts one from PKCE, ``id_token_signed_response_alg`` picks ES256 (default) or RS256.
    """

    name = "idp"
    start_timeout = 20.0

    def __init__(
        self,
        workdir: Path,
        *,
        ldap_url: str,
        ldap_base_dn: str,
        clients: Iterable[Mapping[str, Any]],
        port: int | None = None,
        bind_dn: str = SERVICE_DN,
        bind_password: str = SERVICE_PASSWORD,
        audience: str = DEFAULT_AUDIENCE,
        extra_resources: Iterable[str] = (),
        access_token_alg: str = "ES256",
        ttl: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(Path(workdir), port=port)
        self.ldap_url = ldap_url
        self.ldap_base_dn = ldap_base_dn
        self.clients = [dict(c) for c in clients]
        self.bind_dn = bind_dn
        self.bind_password = bind_password
        self.audience = audience
        self.extra_resources = list(extra_resources)
        self.access_token_alg = access_token_alg
        self.ttl = dict(ttl or {})
        self.config_path = self.workdir / "idp-config.json"
        self._discovery: dict[str, Any] | None = None

    @property
    def issuer(self) -> str:
        return self.url

    def client(self, client_id: str = ROLEGATE_CLIENT_ID) -> dict[str, Any]:
        """The metadata a client was registered with (incl. its secret)."""
        for c in self.clients:
            if c["client_id"] == client_id:
                return c
        raise LabError(f"no client {client_id!r} registered with the lab IdP")

    @property
    def discovery(self) -> dict[str, Any]:
        """The provider's ``/.well-known/openid-configuration`` document."""
        if self._discovery is None:
            with urllib.request.urlopen(f"{self.url}/.well-known/openid-configuration", timeout=5) as resp:
                self._discovery = json.load(resp)
        return self._discovery

    @property
    def jwks_uri(self) -> str:
        return str(self.discovery["jwks_uri"])

    def _before_start(self) -> None:
        node = shutil.which("node")
        if node is None:
            raise LabError("node not found: install Node.js >= 20.19 (Debian package nodejs)")
        if not (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
            raise LabError(f"oidc-provider is not installed in {IDP_DIR}: run scripts/setup.sh")
        clients, pkce_optional = [], []
        for c in self.clients:
            meta, require_pkce = _client_metadata(c)
            clients.append(meta)
            if not require_pkce:
                pkce_optional.append(meta["client_id"])
        config = {
            "issuer": self.url,
            "host": "127.0.0.1",
            "port": self.port,
            "ldap": {"url": self.ldap_url, "base_dn": self.ldap_base_dn,
                     "bind_dn": self.bind_dn, "bind_password": self.bind_password},
            "clients": clients,
            "pkce_optional": pkce_optional,
            "audience": self.audience,
            "extra_resources": self.extra_resources,
            "access_token_alg": self.access_token_alg,
            "ttl": self.ttl,
        }
        # holds client secrets: readable by the owner only
        self.config_path.write_text(json.dumps(config, indent=2))
        self.config_path.chmod(0o600)
        self._discovery = None

    def _command(self) -> list[str]:
        return [shutil.which("node") or "node", str(IDP_DIR / "server.mjs"), str(self.config_path)]

    def _cwd(self) -> Path:
        return IDP_DIR

    def _env(self) -> dict[str, str]:
        return {"NODE_ENV": "development"}

    def _is_ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/.well-known/openid-configuration", timeout=1) as resp:
            return resp.status == 200 and json.load(resp).get("issuer") == self.url

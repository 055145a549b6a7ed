"""A real ``rolegate serve`` in front of a RecordingUpstream, with working credentials to mix into attacks.

``proxied_worker(tmp)`` starts it with sessions, rolegate's tokens, an OIDC provider that is never reached
(so the IdP's bearer authenticator parses tokens too), day passes, forward-auth and the audit log; issues a
day pass with the CLI and redeems it like a phone, so ``session_cookie`` (a Cookie header value) and
``bearer`` (a rolegate access token got with that session) are valid credentials.
"""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from rolegate_lab import free_port

from tests.security.rawhttp import RecordingUpstream
from tests.support.serve import RolegateProcess

SECRET = "security-tests-session-secret-" + "s" * 32
# What a client must never get past rolegate to a backend: cookies (exact names, or this prefix).
ROLEGATE_COOKIES = frozenset({"rolegate_session", "rolegate_pass", "rolegate_pass_confirm"})
ROLEGATE_COOKIE_PREFIX = "rolegate_login_"
PROTECTED_PATHS = (b"/workorders", b"/buildings/", b"/admin")  # the routes that need a credential


def security_config(port: int, upstream_url: str, tmp: Path, **server: Any) -> dict[str, Any]:
    from rolegate.config.sections.server import ServerConfig

    if "forward_auth" in ServerConfig.model_fields:  # forward-auth is opt-in once that key exists
        server.setdefault("forward_auth", {"proxy": "nginx"})
    return {
        "server": {
            "listen": f"127.0.0.1:{port}",
            "public_url": f"http://127.0.0.1:{port}",
            "internal_listen": "127.0.0.1:0",
            "workers": 1,
            **server,
        },
        "storage": {"url": f"sqlite:///{tmp}/rolegate.db"},
        "session": {"secret": SECRET},
        # Never reached (nothing listens on port 9): bearer JWTs naming it are parsed, then refused.
        "oidc": {
            "issuer": "http://127.0.0.1:9/idp",
            "client_id": "rolegate",
            "client_secret": "unused",
            "timeout": "1s",
        },
        "tokens": {},
        "scopes": {"building": {"description": "a building"}},
        "permissions": ["workorders:view", "admin:view"],
        "roles": {"subcontractor": {"permissions": ["workorders:view"]}},
        "upstreams": {"app": {"url": upstream_url, "connect_timeout": "2s", "timeout": "5s"}},
        "routes": [
            {"path": "/public/**", "mode": "public", "upstream": "app"},
            {"path": "/ws", "mode": "public", "upstream": "app"},
            {"path": "/workorders/**", "mode": "authenticated", "upstream": "app"},
            {
                "path": "/buildings/{building}/**",
                "permission": "workorders:view",
                "scope": "building:{building}",
                "upstream": "app",
            },
            {"path": "/admin/**", "permission": "admin:view", "upstream": "app"},
        ],
        "daypass": {
            "templates": {
                "visitor": {"role": "subcontractor", "scopes": ["building"], "expires": "8h", "require": ["name"]}
            }
        },
        "audit": {"sinks": ["store"], "reads": {"sample": 1.0}},
    }


@dataclass
class ProxiedWorker:
    rolegate: RolegateProcess
    upstream: RecordingUpstream
    session_cookie: str  # a Cookie header value naming a live day-pass session
    bearer: str  # a rolegate access token of that session
    user: str  # who rolegate says they are (X-Rolegate-User)

    @property
    def port(self) -> int:
        return self.rolegate.port

    def log(self) -> str:
        return "".join(self.rolegate.output)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None


def _open(opener: urllib.request.OpenerDirector, request: urllib.request.Request) -> tuple[int, Any, bytes]:
    try:
        with opener.open(request, timeout=15) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def _cookies(headers: Any) -> dict[str, str]:
    jar: dict[str, str] = {}
    for value in headers.get_all("Set-Cookie") or ():
        for name, morsel in SimpleCookie(value).items():
            if morsel.value:
                jar[name] = morsel.value
    return jar


def _redeem(url: str, link: str) -> str:
    """Open the pass link and confirm it, as a phone does: the session's Cookie header value."""
    opener = urllib.request.build_opener(_NoRedirect)
    path = link.split("/.rolegate/", 1)[1]
    status, headers, body = _open(
        opener, urllib.request.Request(f"{url}/.rolegate/{path}", headers={"Accept": "text/html"})
    )
    assert status == 200, body[:500]
    csrf = re.search(rb'name="csrf" value="([^"]+)"', body).group(1).decode()
    jar = _cookies(headers)
    confirm = urllib.request.Request(
        f"{url}/.rolegate/{path}",
        data=urlencode({"csrf": csrf}).encode(),
        method="POST",
        headers={
            "Accept": "text/html",
            "Origin": url,
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": "; ".join(f"{k}={v}" for k, v in jar.items()),
        },
    )
    status, headers, body = _open(opener, confirm)
    assert status == 303, (status, body[:500])
    session = {k: v for k, v in _cookies(headers).items() if k in ROLEGATE_COOKIES - {"rolegate_pass_confirm"}}
    assert session, headers
    return "; ".join(f"{k}={v}" for k, v in session.items())


def _token(url: str, cookie: str) -> str:
    import json

    request = urllib.request.Request(
        f"{url}/.rolegate/token",
        data=b"grant_type=urn%3Arolegate%3Asession",
        method="POST",
        headers={
            "Cookie": cookie,
            "X-Requested-With": "tests",
            "Accept": "application/json",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    status, _, body = _open(urllib.request.build_opener(_NoRedirect), request)
    assert status == 200, body[:500]
    return json.loads(body)["access_token"]


@contextmanager
def proxied_worker(tmp: Path, **server: Any) -> Iterator[ProxiedWorker]:
    tmp.mkdir(parents=True, exist_ok=True)
    with RecordingUpstream() as upstream:
        port = free_port()
        with RolegateProcess(security_config(port, upstream.url, tmp, **server), tmp) as rolegate:
            issued = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "rolegate",
                    "daypass",
                    "issue",
                    "-c",
                    str(rolegate.config_path),
                    "--template",
                    "visitor",
                    "--scope",
                    "building:a",
                    "--name",
                    "Vera Visitor",
                    "--out",
                    str(tmp),
                ],
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=60,
                env=rolegate.env,
            )
            assert issued.returncode == 0, issued.stderr
            link = re.search(r"Link: (\S+)", issued.stdout).group(1)
            cookie = _redeem(rolegate.url, link)
            bearer = _token(rolegate.url, cookie)
            # Who rolegate says the pass holder is: read off a request it forwarded.
            _, headers, _ = _open(
                urllib.request.build_opener(_NoRedirect),
                urllib.request.Request(
                    f"{rolegate.url}/workorders/whoami", headers={"Cookie": cookie, "Accept": "application/json"}
                ),
            )
            seen = upstream.received[-1]
            assert seen.target == b"/workorders/whoami", seen
            user = seen.values(b"X-Rolegate-User")[0].decode()
            yield ProxiedWorker(rolegate, upstream, cookie, bearer, user)

"""Forward-auth on a route that hides fields: refused for a caller the fields are hidden from.

Behind nginx ``auth_request`` (or Traefik/Caddy) the answer goes from the app to the client through the
front proxy, never through rolegate, so nothing can remove the prices. Allowing the subrequest would serve
them whole: redaction would fail open. The caller who may see the fields is allowed as before.
"""

from __future__ import annotations

import pytest

from rolegate_lab import lab_client_session
from tests.identity.conftest import JSON, rolegate_yaml, sign_in, start_rolegate, stop_rolegate

pytestmark = pytest.mark.lab

EXTRA = """
  - {path: /priced/**, mode: authenticated, upstream: backend, redact: {fields: [price], unless: invoices:view}}
roles:
  finance: {permissions: [invoices:view]}
bindings:
  - {user: erin, role: finance}
"""


def nginx(method: str, uri: str) -> dict[str, str]:
    return {
        "X-Original-Method": method,
        "X-Original-URI": uri,
        "X-Forwarded-Host": "apps.example.test",
        "X-Forwarded-Proto": "https",
    }


@pytest.fixture
async def rg(lab_idp, lab_backend, rolegate_url, tmp_path):
    rg = await start_rolegate(rolegate_url, lab_idp, lab_backend.url, tmp_path)
    rg.swap(
        rolegate_yaml(
            url=rg.url,
            idp=lab_idp,
            backend_url=lab_backend.url,
            db=tmp_path / "rolegate.db",
            server_extra="  forward_auth: {proxy: nginx}\n",
        )
        + EXTRA
    )
    yield rg
    await stop_rolegate(rg)


async def auth_status(http, rg, uri: str) -> int:
    async with http.get(
        rg.url + "/.rolegate/auth", headers={**JSON, **nginx("GET", uri)}, allow_redirects=False
    ) as resp:
        await resp.read()
        return resp.status


async def test_a_caller_the_fields_are_hidden_from_is_refused(rg):
    async with lab_client_session() as http:
        await sign_in(http, rg, "bob")
        assert await auth_status(http, rg, "/workorders/1") == 200  # no redaction there: allowed as before
        assert await auth_status(http, rg, "/priced/1") == 403


async def test_a_caller_who_may_see_the_fields_is_allowed(rg):
    async with lab_client_session() as http:
        await sign_in(http, rg, "erin")
        assert await auth_status(http, rg, "/priced/1") == 200

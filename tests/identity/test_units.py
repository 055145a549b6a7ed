"""Fast tests of the pure pieces: return-target policy, sealed cookies, per-client answers, refusal page."""

from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import make_mocked_request
from hypothesis import given
from hypothesis import strategies as st

from rolegate.errors import Unauthenticated
from rolegate.identity.challenge import challenge_response
from rolegate.identity.errors import SignInRequired
from rolegate.identity.redirect_target import RedirectPolicy
from rolegate.identity.sealed_cookie import CookieSealer

POLICY = RedirectPolicy("https://safety.example.com", ("apps.example.com", "ops.example.com:8443"))


@pytest.mark.parametrize(
    "target,expected",
    [
        ("/x?y=1", "https://safety.example.com/x?y=1"),
        ("https://safety.example.com/a", "https://safety.example.com/a"),
        ("https://apps.example.com/a", "https://apps.example.com/a"),
        ("http://apps.example.com:8080/a", "http://apps.example.com:8080/a"),
        ("https://ops.example.com:8443/", "https://ops.example.com:8443/"),
    ],
)
def test_allowed_targets(target, expected):
    assert POLICY.safe_target(target) == expected


@pytest.mark.parametrize(
    "target",
    [
        "//evil.com",
        "///evil.com",
        "/\\evil.com",
        "\\\\evil.com",
        "https:evil.com",
        "https:/evil.com",
        "https://evil.com",
        "https://safety.example.com@evil.com/",
        "https://user:pw@safety.example.com/",
        "https://safety.example.com.evil.com/",
        "https://evil.com#@safety.example.com",
        "javascript:alert(1)",
        "JAVASCRIPT:alert(1)",
        "data:text/html,x",
        "ftp://safety.example.com/",
        "http://safety.example.com/",
        "https://ops.example.com:9999/",
        "/a\r\nSet-Cookie: x=y",
        "/a\tb",
        "",
        " https://safety.example.com/",
        "https://safety.example.com\\@evil.com/",
        "https://[::1]/",
    ],
)
def test_refused_targets(target):
    assert POLICY.safe_target(target) is None


@given(st.text(max_size=60))
def test_any_accepted_target_stays_on_allowed_hosts(text):
    result = POLICY.safe_target(text)
    if result is not None:
        from urllib.parse import urlsplit

        parts = urlsplit(result)
        assert parts.scheme in ("http", "https")
        assert parts.hostname in ("safety.example.com", "apps.example.com", "ops.example.com")
        assert "@" not in parts.netloc and "\\" not in result


def test_sealed_cookie_round_trip_and_binding():
    sealer = CookieSealer("k" * 40, "session-cookie")
    value = sealer.seal({"i": "abc"}, name="rolegate_session", ttl=60)
    assert sealer.unseal(value, name="rolegate_session") == {"i": "abc"}
    assert "abc" not in value  # encrypted, not just signed
    assert sealer.unseal(value, name="other_cookie") is None  # bound to its cookie name
    assert CookieSealer("k" * 40, "login-state").unseal(value, name="rolegate_session") is None  # and purpose
    assert CookieSealer("j" * 40, "session-cookie").unseal(value, name="rolegate_session") is None
    assert sealer.unseal(sealer.seal({"i": "x"}, name="rolegate_session", ttl=-1), name="rolegate_session") is None
    for bad in ("", "!!!", "AAAA", value[:-2], value + "A", "x" * 5000):
        assert sealer.unseal(bad, name="rolegate_session") is None


def _request(method="GET", **headers):
    return make_mocked_request(method, "/app", headers=headers)


def test_challenge_per_client():
    error = SignInRequired("x", login_url="https://safety.example.com/.rolegate/login?rd=%2Fapp")
    browser = challenge_response(_request(Accept="text/html"), error)
    assert browser.status == 302 and browser.headers["Location"].endswith("rd=%2Fapp")
    for req in (
        _request(Accept="application/json"),
        _request("POST", Accept="text/html"),
        _request(Accept="text/html", **{"X-Requested-With": "XMLHttpRequest"}),
    ):
        answer = challenge_response(req, error)
        assert answer.status == 401
        assert answer.headers["WWW-Authenticate"] == 'Bearer realm="rolegate"'
    bad_token = SignInRequired("x", bearer_error="invalid_token")
    answer = challenge_response(_request(Accept="text/html"), bad_token)
    assert answer.status == 401 and 'error="invalid_token"' in answer.headers["WWW-Authenticate"]
    assert challenge_response(_request(Accept="text/html"), Unauthenticated("plain")).status == 401


async def test_account_disabled_page():
    """The disabled account's page is server/refused.py's (the pipeline's one path for a signed-in refusal)."""
    from types import SimpleNamespace

    from rolegate.identity.errors import AccountDisabled
    from rolegate.server.refused import refusal_page_for

    def access():
        return SimpleNamespace(
            error=AccountDisabled("ivan is disabled"),
            principal=SimpleNamespace(username="ivan", name="Ivan", daypass_id=None),
        )

    page = await refusal_page_for(None, _request(Accept="text/html"), access())
    assert page.status == 403 and "disabled" in page.text and 'href="/.rolegate/logout"' in page.text
    api = await refusal_page_for(None, _request(Accept="application/json"), access())
    assert api.status == 403 and json.loads(api.text)["error"] == "account_disabled"
    assert json.loads(api.text)["sign_out"] == "/.rolegate/logout"

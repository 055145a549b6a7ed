"""Drive the lab IdP's sign-in like a browser would, with a plain HTTP client.

``idp_login`` follows redirects from an authorization URL (or from rolegate's
redirect to it), fills the login form, and stops at the redirect to the client's
callback *without following it*, so tests can inspect ``code``/``state`` or replay it.
The aiohttp session must keep cookies for 127.0.0.1: use ``lab_client_session()``
(or ``aiohttp.CookieJar(unsafe=True)``); aiohttp's default jar drops cookies of IP hosts.
"""
from __future__ import annotations

import html
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from typing import Any

import aiohttp
from yarl import URL

from .errors import LabError

MAX_HOPS = 20
_FORM_RE = re.compile(r"<form\b([^>]*)>(.*?)</form>", re.S | re.I)
_ATTR_RE = re.compile(r'([a-zA-Z_:.-]+)\s*=\s*"([^"]*)"')
_INPUT_RE = re.compile(r"<input\b([^>]*)>", re.I)
_ERROR_RE = re.compile(r'id="error"[^>]*>(.*?)</', re.S)


class LoginFailed(LabError):
    """The IdP re-rendered its login form: wrong password, unknown user or directory down."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"IdP refused the sign-in (HTTP {status}): {message}")
        self.status = status
        self.message = message


@dataclass
class CallbackRedirect:
    """The IdP's redirect to the client's redirect URI, not followed."""

    url: str
    status: int
    params: dict[str, str] = field(default_factory=dict)

    @property
    def code(self) -> str | None:
        return self.params.get("code")

    @property
    def state(self) -> str | None:
        return self.params.get("state")

    @property
    def error(self) -> str | None:
        return self.params.get("error")


def lab_client_session(**kwargs: Any) -> aiohttp.ClientSession:
    """An aiohttp session whose cookie jar accepts cookies from 127.0.0.1."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), **kwargs)


def _check_cookie_jar(http: aiohttp.ClientSession) -> None:
    # aiohttp's default jar silently drops cookies set by IP hosts such as 127.0.0.1,
    # which would make the IdP loop back to its login form with no hint why.
    if getattr(http.cookie_jar, "_unsafe", True) is False:
        raise LabError("this aiohttp session drops cookies from 127.0.0.1: use "
                       "rolegate_lab.browser.lab_client_session() or aiohttp.CookieJar(unsafe=True)")


def _attrs(tag: str) -> dict[str, str]:
    return {k.lower(): html.unescape(v) for k, v in _ATTR_RE.findall(tag)}


def _find_form(page: str, *, with_field: str | None = None, form_id: str | None = None) -> tuple[str, dict[str, str]] | None:
    """(action, hidden/prefilled fields) of the first form matching, or None."""
    for form_attrs, body in _FORM_RE.findall(page):
        attrs = _attrs(form_attrs)
        inputs = [_attrs(i) for i in _INPUT_RE.findall(body)]
        names = {i.get("name") for i in inputs}
        if with_field and with_field not in names:
            continue
        if form_id and attrs.get("id") != form_id:
            continue
        fields = {i["name"]: i.get("value", "") for i in inputs if "name" in i}
        return attrs.get("action", ""), fields
    return None


def _error_text(page: str) -> str:
    match = _ERROR_RE.search(page)
    return html.unescape(re.sub(r"<[^>]+>", "", match.group(1))).strip() if match else "no error message"


class _Tracker:
    """Decides when a redirect has reached the client's callback (it is then not followed)."""

    def __init__(self, callback_prefix: str | None) -> None:
        self.callback_prefix = callback_prefix
        self.idp_origin: str | None = None

    def see(self, url: str) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
        if "client_id" in query and "redirect_uri" in query and self.idp_origin is None:
            self.idp_origin = _origin(url)  # the authorization request: this is the IdP
            self.callback_prefix = self.callback_prefix or query["redirect_uri"][0]

    def is_callback(self, url: str) -> bool:
        if self.callback_prefix and url.split("?", 1)[0] == self.callback_prefix.split("?", 1)[0]:
            return True
        return self.idp_origin is not None and _origin(url) != self.idp_origin

    @staticmethod
    def result(url: str, status: int) -> CallbackRedirect:
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        return CallbackRedirect(url=url, status=status, params=params)


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def idp_login(
    http: aiohttp.ClientSession,
    authorize_response_or_url: aiohttp.ClientResponse | str | URL,
    username: str,
    password: str,
    *,
    callback_prefix: str | None = None,
) -> CallbackRedirect:
    """Sign in at the lab IdP and return the (unfollowed) redirect to the client's callback.

    Raises ``LoginFailed`` when the IdP re-renders the form (wrong password, unknown
    user), ``LabError`` on anything else unexpected. If the IdP session already
    exists, no form is shown and the redirect comes straight back.
    """
    start = authorize_response_or_url
    if isinstance(start, aiohttp.ClientResponse):
        location = start.headers.get("Location")
        url = str(start.url.join(URL(location))) if location and 300 <= start.status < 400 else str(start.url)
    else:
        url = str(start)
    _check_cookie_jar(http)
    tracker = _Tracker(callback_prefix)
    submitted = False
    method, data = "GET", None
    for _ in range(MAX_HOPS):
        tracker.see(url)
        async with http.request(method, url, data=data, allow_redirects=False) as resp:
            body = await resp.text(errors="replace")
            status = resp.status
            location = resp.headers.get("Location")
        if 300 <= status < 400 and location:
            target = urllib.parse.urljoin(url, location)
            if tracker.is_callback(target):
                return tracker.result(target, status)
            url, method, data = target, "GET", None
            continue
        form = _find_form(body, with_field="password")
        if form is None:
            raise LabError(f"unexpected answer from {url} (HTTP {status}): {_error_text(body)}")
        if submitted:
            raise LoginFailed(status, _error_text(body))
        action, fields = form
        url = urllib.parse.urljoin(url, action or url)
        method, data = "POST", {**fields, "login": username, "password": password}
        submitted = True
    raise LabError(f"more than {MAX_HOPS} redirects while signing in")


async def idp_logout(http: aiohttp.ClientSession, end_session_url: str | URL) -> CallbackRedirect | None:
    """Confirm an RP-initiated logout at the IdP.

    Returns the (unfollowed) redirect to the post-logout URI, or None when the IdP
    showed its own "signed out" page (no post_logout_redirect_uri was given).
    """
    _check_cookie_jar(http)
    url = str(end_session_url)
    idp = _origin(url)
    method, data = "GET", None
    confirmed = False
    for _ in range(MAX_HOPS):
        async with http.request(method, url, data=data, allow_redirects=False) as resp:
            body = await resp.text(errors="replace")
            status, location = resp.status, resp.headers.get("Location")
        if 300 <= status < 400 and location:
            target = urllib.parse.urljoin(url, location)
            if _origin(target) != idp:
                return _Tracker.result(target, status)
            url, method, data = target, "GET", None
            continue
        form = _find_form(body, form_id="op.logoutForm")
        if form is None or confirmed:
            if status == 200 and 'id="signed-out"' in body:
                return None
            raise LabError(f"unexpected logout answer from {url} (HTTP {status}): {_error_text(body)}")
        action, fields = form
        url, method, data = urllib.parse.urljoin(url, action), "POST", {**fields, "logout": "yes"}
        confirmed = True
    raise LabError(f"more than {MAX_HOPS} redirects while signing out")


# -- sync variant ---------------------------------------------------------------------
class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def idp_login_sync(
    authorize_url: str,
    username: str,
    password: str,
    *,
    cookies: CookieJar | None = None,
    callback_prefix: str | None = None,
) -> CallbackRedirect:
    """``idp_login`` with urllib, for synchronous tests and scripts."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cookies or CookieJar()), _NoRedirect)
    tracker = _Tracker(callback_prefix)
    url, data, submitted = authorize_url, None, False
    for _ in range(MAX_HOPS):
        tracker.see(url)
        req = urllib.request.Request(url, data=urllib.parse.urlencode(data).encode() if data else None)
        try:
            with opener.open(req, timeout=10) as resp:
                status, location, body = resp.status, resp.headers.get("Location"), resp.read().decode(errors="replace")
        except urllib.error.HTTPError as err:
            status, location, body = err.code, err.headers.get("Location"), err.read().decode(errors="replace")
        if 300 <= status < 400 and location:
            target = urllib.parse.urljoin(url, location)
            if tracker.is_callback(target):
                return tracker.result(target, status)
            url, data = target, None
            continue
        form = _find_form(body, with_field="password")
        if form is None:
            raise LabError(f"unexpected answer from {url} (HTTP {status}): {_error_text(body)}")
        if submitted:
            raise LoginFailed(status, _error_text(body))
        action, fields = form
        url, data, submitted = urllib.parse.urljoin(url, action or url), {**fields, "login": username, "password": password}, True
    raise LabError(f"more than {MAX_HOPS} redirects while signing in")

"""The pages a pass holder sees on a phone: confirm, the pass home, the pass-aware 403, and every way a
pass can stop working.

Self-contained HTML (inline style, no external asset): the link carries the code, and nothing on the
page may send it elsewhere (Referrer-Policy no-referrer, CSP default-src 'none'). Everything works
without JavaScript; the pass home alone runs one fixed inline script (allowed by its hash, nothing
else) that counts the server-rendered "valid for" down.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
from collections.abc import Sequence

from aiohttp import web

from rolegate.display_time import duration_text, time_html
from rolegate.identity.daypass.codes import PASS_HOME
from rolegate.identity.daypass.expiry import format_local
from rolegate.identity.daypass.links import PassLink
from rolegate.identity.daypass.record import PassRecord

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "X-Robots-Tag": "noindex, nofollow",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}

_LAYOUT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="referrer" content="no-referrer"><title>{title}</title>
<style>
*{{box-sizing:border-box}}
body{{font:17px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:1.25rem;color:#1d2430;
background:#f4f6f9}}
main{{max-width:28rem;margin:0 auto;background:#fff;border-radius:14px;padding:1.5rem 1.25rem;
box-shadow:0 1px 4px rgba(0,0,0,.08)}}
h1{{font-size:1.35rem;margin:0 0 1rem}}
dl{{margin:0 0 1.25rem}} dt{{font-size:.8rem;color:#5b6575;text-transform:uppercase;letter-spacing:.04em}}
dd{{margin:0 0 .75rem;font-weight:600;word-break:break-word}}
button,.button{{display:block;width:100%;padding:1rem;font:inherit;font-weight:700;color:#fff;background:#0b5fff;
border:0;border-radius:10px;text-align:center;text-decoration:none}}
.note{{color:#5b6575;font-size:.9rem;margin-top:1rem}} .bad h1{{color:#b3261e}}
h2{{font-size:1rem;margin:1.25rem 0 .6rem}} .left{{font-size:1.4rem;font-weight:700;color:#0b6b2f}}
.links{{list-style:none;margin:0;padding:0}} .links li{{margin:0 0 .6rem}}
.links a{{display:block;padding:.8rem 1rem;border:1px solid #c9d2e0;border-radius:10px;color:#0b3d91;
font-weight:700;text-decoration:none;min-height:44px}}
.links .path{{display:block;font-weight:400;font-size:.85rem;color:#5b6575;word-break:break-all}}
.secondary{{background:#fff;color:#0b3d91;border:1px solid #0b3d91}}
</style></head>
<body><main class="{css}">{body}</main></body></html>
"""


def _page(
    title: str, body: str, *, status: int = 200, css: str = "", script: str = "", headers: dict[str, str] | None = None
) -> web.Response:
    text = _LAYOUT.format(title=html.escape(title), body=body + script, css=css)
    return web.Response(
        status=status, text=text, content_type="text/html", headers={**SECURITY_HEADERS, **(headers or {})}
    )


def _details(record: PassRecord, zone: str) -> str:
    rows = [
        ("For", f"{record.name}" + (f", {record.company}" if record.company else "")),
        ("Issued by", record.issued_by),
        ("Access to", record.scope),
        ("Valid until", format_local(record.expires_at, zone)),
    ]
    if record.reason:
        rows.append(("Reason", record.reason))
    return "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in rows) + "</dl>"


# The countdown of the pass home, on top of the server-rendered text. It counts from what the server
# said is left (not the phone's clock; rounded up, so it never runs ahead of the server) and, a moment
# after zero, reloads once: the server then answers with the "expired" page, which has no script.
_COUNTDOWN = (
    '(function(){var e=document.getElementById("left");if(!e)return;'
    'var s=+e.getAttribute("data-left"),end=Date.now()+s*1e3;'
    "function f(t){var m=Math.floor(t/60),d=Math.floor(m/1440),h=Math.floor(m%1440/60);m%=60;"
    'return d?d+" d "+h+" h":h?h+" h "+m+" min":m?m+" min":"less than a minute"}'
    'function tick(){var t=(end-Date.now())/1e3;if(t<=0){e.textContent="expired";'
    "if(s>0)setTimeout(function(){location.reload()},1500);return}"
    "e.textContent=f(t);setTimeout(tick,Math.min(15e3,t*1e3+50))}tick()})();"
)
_COUNTDOWN_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-"
    + base64.b64encode(hashlib.sha256(_COUNTDOWN.encode()).digest()).decode()
    + "'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _links(links: Sequence[PassLink], contact: str) -> str:
    if not links:
        return f'<p id="pass-links">This pass opens no pages here. Contact {html.escape(contact)}.</p>'
    items = "".join(
        f'<li><a href="{html.escape(link.target)}">{html.escape(link.title)}'
        f'<span class="path">{html.escape(link.target)}</span></a></li>'
        for link in links
    )
    return f'<ul class="links" id="pass-links">{items}</ul>'


def _holder(record: PassRecord) -> str:
    return record.name + (f", {record.company}" if record.company else "")


def home_page(record: PassRecord, zone: str, links: Sequence[PassLink], *, now: float, contact: str) -> web.Response:
    """The pass home: who the pass is for, where and how long it is valid, what it opens, whom to call."""
    left = max(0, math.ceil(record.expires_at - now))
    rows = [
        ("For", html.escape(_holder(record))),
        ("Valid at", html.escape(record.scope)),
        (
            "Valid for",
            f'<span class="left" id="left" data-left="{left}">{html.escape(duration_text(left))}'
            f"</span><br>until {time_html(record.expires_at, zone, until=True)}",
        ),
        ("Issued by", html.escape(record.issued_by)),
    ]
    if record.reason:
        rows.append(("Reason", html.escape(record.reason)))
    details = "".join(f"<dt>{html.escape(k)}</dt><dd>{v}</dd>" for k, v in rows)
    body = (
        f'<h1>Your day pass</h1><dl id="pass-details">{details}</dl>'
        f"<h2>This pass opens</h2>{_links(links, contact)}"
        f'<p class="note">Questions, or something you cannot open? Contact {html.escape(contact)}.</p>'
    )
    return _page(
        "Day pass", body, script=f"<script>{_COUNTDOWN}</script>", headers={"Content-Security-Policy": _COUNTDOWN_CSP}
    )


def no_pass_page(contact: str) -> web.Response:
    """The pass home on a device that holds no pass."""
    body = (
        "<h1>No day pass on this device</h1><p>Open the day pass link you received (or scan its QR code) "
        f'on this device and tap “Use this pass on this device”.</p><p class="note">No link? Contact '
        f"{html.escape(contact)}.</p>"
    )
    return _page("Day pass", body, status=401)


def outside_pass_page(
    record: PassRecord, zone: str, links: Sequence[PassLink], *, contact: str, reference: str
) -> web.Response:
    """The 403 a pass holder gets: what the pass covers and the way back, nothing about the page refused."""
    body = (
        f"<h1>Not part of your day pass</h1><p>Your day pass does not open this page. It is valid at "
        f"<strong>{html.escape(record.scope)}</strong> until {time_html(record.expires_at, zone, until=True)}."
        f"</p><h2>Your pass opens</h2>{_links(links, contact)}"
        f'<a class="button" id="pass-home" href="{PASS_HOME}">Back to your day pass</a>'
        f'<p class="note">Need more access? Contact {html.escape(contact)}. Reference: '
        f"{html.escape(reference)}</p>"
    )
    return _page("Not part of your day pass", body, status=403, css="bad", headers={"X-Rolegate-Reference": reference})


def confirm_page(record: PassRecord, zone: str, *, csrf: str, action: str) -> web.Response:
    devices = (
        "this pass works on one device only"
        if record.devices == 1
        else f"this pass works on {record.devices_left} more device(s)"
    )
    body = (
        f"<h1>Day pass</h1>{_details(record, zone)}"
        f'<form method="post" action="{html.escape(action)}">'
        f'<input type="hidden" name="csrf" value="{html.escape(csrf)}">'
        f'<button type="submit" id="use-pass">Use this pass on this device</button></form>'
        f'<p class="note">Only tap the button on the phone or computer you will work with: '
        f"{html.escape(devices)}.</p>"
    )
    return _page("Day pass", body)


def already_active_page(record: PassRecord, zone: str, landing: str) -> web.Response:
    body = (
        f"<h1>This pass is active on this device</h1>{_details(record, zone)}"
        f'<a class="button" href="{html.escape(landing)}">Continue</a>'
    )
    return _page("Day pass active", body)


_ENDED = {
    "invalid": ("Day pass not valid", "This day pass link is invalid or has expired."),
    "expired": ("Day pass expired", "This day pass has expired."),
    "revoked": ("Day pass revoked", "This day pass was revoked."),
    "used_up": ("Day pass already used", "This day pass was already used on another device."),
    "stale_form": ("Please try again", "This confirmation page is out of date. Open the day pass link again."),
    "rate_limited": ("Too many attempts", "Too many attempts. Wait a minute and try again."),
}
_STATUS = {"invalid": 404, "expired": 410, "revoked": 410, "used_up": 403, "stale_form": 403, "rate_limited": 429}


def ended_message(kind: str, contact: str) -> str:
    """The sentence a holder reads (also the public message of a refused pass session)."""
    message = _ENDED[kind][1]
    if kind in ("rate_limited", "stale_form"):
        return message
    return f"{message} Contact {contact}."


def ended_page(kind: str, contact: str) -> web.Response:
    title = _ENDED[kind][0]
    body = f"<h1>{html.escape(title)}</h1><p>{html.escape(ended_message(kind, contact))}</p>"
    response = _page(title, body, status=_STATUS[kind], css="bad")
    if kind == "rate_limited":
        response.headers["Retry-After"] = "60"
    return response

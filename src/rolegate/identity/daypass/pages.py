"""The pages a pass holder sees on a phone: confirm, done, and every way a pass can stop working.

Self-contained HTML (inline style, no script, no external asset): the link carries the code, and
nothing on the page may send it elsewhere (Referrer-Policy no-referrer, CSP default-src 'none').
"""

from __future__ import annotations

import html

from aiohttp import web

from rolegate.identity.daypass.expiry import format_local
from rolegate.identity.daypass.record import PassRecord

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "X-Robots-Tag": "noindex, nofollow",
    "Content-Security-Policy": ("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
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
</style></head>
<body><main class="{css}">{body}</main></body></html>
"""


def _page(title: str, body: str, *, status: int = 200, css: str = "") -> web.Response:
    text = _LAYOUT.format(title=html.escape(title), body=body, css=css)
    return web.Response(status=status, text=text, content_type="text/html", headers=SECURITY_HEADERS)


def _details(record: PassRecord, zone: str) -> str:
    rows = [("For", f"{record.name}" + (f", {record.company}" if record.company else "")),
            ("Issued by", record.issued_by), ("Access to", record.scope),
            ("Valid until", format_local(record.expires_at, zone))]
    if record.reason:
        rows.append(("Reason", record.reason))
    return "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in rows) + "</dl>"


def confirm_page(record: PassRecord, zone: str, *, csrf: str, action: str) -> web.Response:
    devices = ("this pass works on one device only" if record.devices == 1
               else f"this pass works on {record.devices_left} more device(s)")
    body = (f"<h1>Day pass</h1>{_details(record, zone)}"
            f'<form method="post" action="{html.escape(action)}">'
            f'<input type="hidden" name="csrf" value="{html.escape(csrf)}">'
            f'<button type="submit" id="use-pass">Use this pass on this device</button></form>'
            f'<p class="note">Only tap the button on the phone or computer you will work with: '
            f"{html.escape(devices)}.</p>")
    return _page("Day pass", body)


def already_active_page(record: PassRecord, zone: str, landing: str) -> web.Response:
    body = (f"<h1>This pass is active on this device</h1>{_details(record, zone)}"
            f'<a class="button" href="{html.escape(landing)}">Continue</a>')
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

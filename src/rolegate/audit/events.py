"""Audit events, schema version 1: pure builders any stage can call (no aiohttp, no I/O).

Every builder returns an :class:`AuditEvent` whose ``body`` is a JSON-ready dict. Common fields of
every body: ``v`` (schema version), ``id`` (event id), ``user`` (who acted, or None for rolegate
itself). The field list of each kind is documented in ``docs/audit-events.md``; adding an optional
field keeps ``v``, renaming or removing one bumps it.

Builders accept whatever the caller has and never raise on odd input: strings are truncated, query
strings and day-pass codes are cut from paths, and keys that look like credentials are redacted, so
no secret reaches the audit trail even by mistake.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

SCHEMA_VERSION = 1

KINDS = ("decision", "request", "admin_change", "daypass", "sync", "signin", "signout")
Kind = Literal["decision", "request", "admin_change", "daypass", "sync", "signin", "signout"]
DecisionVerdict = Literal["allow", "deny", "would-deny"]
DaypassAction = Literal["issue", "redeem", "use", "expire", "revoke"]

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_TEXT = 2048  # longest string kept in any field
MAX_ITEMS = 1000  # longest list kept (sync details); the rest is counted, not listed
MAX_DEPTH = 8
REDACTED = "[redacted]"
# Keys whose values are credentials wherever they appear in before/after/details.
_SECRET_KEY = re.compile(
    r"secret|password|passwd|token|cookie|authorization|api[_-]?key|credential|private", re.IGNORECASE
)
# The day-pass code in a redemption path is a bearer credential.
_PASS_PATH = re.compile(r"^(/\.rolegate/pass/)[^/]+")


class AuditEvent:
    """One event ready to be written: its kind, time, body and whether it may be dropped under load."""

    __slots__ = ("kind", "ts", "body", "droppable")

    def __init__(self, kind: str, body: dict[str, Any], *, ts: float | None = None, droppable: bool = False) -> None:
        self.kind = kind
        # Microsecond precision: the chain hashes ts as fixed 6-decimal text, identical in every store.
        self.ts = round(time.time() if ts is None else float(ts), 6)
        self.body = body
        # Only sampled reads (allowed GET/HEAD/OPTIONS decisions) may be dropped when the queue is full.
        self.droppable = droppable

    @property
    def id(self) -> str:
        event_id: str = self.body["id"]  # the builders below always set it (new_event_id or the caller's)
        return event_id

    def encode(self) -> str:
        """The body as the canonical JSON text that is stored and hashed."""
        return encode_body(self.body)

    def __repr__(self) -> str:
        return f"<AuditEvent {self.kind} {self.body.get('id')}>"


# Built once: json.dumps with options constructs a new encoder on every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=True, default=str, allow_nan=False)


_orjson_dumps: Callable[..., bytes] | None
try:  # optional: the same text, several times faster, for the flat bodies of decisions and requests
    from orjson import OPT_SORT_KEYS as _SORT_KEYS, dumps as _orjson_dumps
except ImportError:  # pragma: no cover - orjson is a declared dependency
    _orjson_dumps = None
_SCALARS = frozenset({str, int, bool, type(None)})
_FLAT = _SCALARS | {list}
_STRS = frozenset({str})


def encode_body(body: Mapping[str, Any]) -> str:
    """Canonical JSON: sorted keys, no spaces, ASCII only (so odd strings can never fail to encode).

    Bodies whose values are exactly str / int / bool / None or lists of str (every decision and
    request event) go through orjson, which writes the very same text for those types; its output is
    used only when it is ASCII without DEL (``ensure_ascii`` would have escaped those). Everything else,
    floats included (NaN must stay an error, not become null), uses the stdlib encoder.
    """
    if _orjson_dumps is not None and body.__class__ is dict:
        types = set(map(type, body.values()))
        if types <= _SCALARS or (
            types <= _FLAT and all(set(map(type, v)) <= _STRS for v in body.values() if v.__class__ is list)
        ):
            try:
                raw = _orjson_dumps(body, option=_SORT_KEYS)
            except TypeError:  # non-str keys, ints beyond 64 bits, lone surrogates: the stdlib's rules
                return _ENCODER.encode(body)
            if raw.isascii() and b"\x7f" not in raw:  # ensure_ascii also escapes DEL
                return raw.decode("ascii")
    return _ENCODER.encode(body)


# Event ids are 64 random bits from the OS; read in blocks, one syscall per 512 ids.
_ID_BLOCK = 512
_id_hex = ""
_id_pos = 0


def _forget_ids() -> None:  # a forked child must never hand out its parent's ids
    global _id_hex, _id_pos
    _id_hex, _id_pos = "", 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_ids)


def new_event_id() -> str:
    global _id_hex, _id_pos
    pos = _id_pos
    if pos >= len(_id_hex):
        _id_hex = secrets.token_hex(8 * _ID_BLOCK)
        pos = 0
    _id_pos = pos + 16
    return _id_hex[pos : pos + 16]


# -- cleaning helpers: total functions, never raise ------------------------------------------------


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"


def _texts(values: Any) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = (values,)
    try:
        items = list(values)
    except TypeError:
        items = [values]
    return [t for t in (_text(v) for v in items[:MAX_ITEMS]) if t is not None]


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _float(value: Any) -> float | None:
    try:
        number = None if value is None else float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number is not None and number == number and abs(number) != float("inf") else None


def clean_path(path: Any) -> str | None:
    """The request path without query string or fragment, with day-pass codes masked."""
    text = _text(path)
    if text is None:
        return None
    if "?" in text or "#" in text:
        text = text.split("?", 1)[0].split("#", 1)[0]
    return _PASS_PATH.sub(r"\1" + REDACTED, text) if text.startswith("/.rolegate/pass/") else text


def scrub(value: Any, depth: int = 0) -> Any:
    """A JSON-ready copy with credential-looking keys redacted and sizes bounded."""
    if depth > MAX_DEPTH:
        return "…"
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for i, (key, item) in enumerate(value.items()):
            if i >= MAX_ITEMS:
                out["…truncated"] = len(value) - MAX_ITEMS
                break
            name = _text(key) or ""
            out[name] = REDACTED if _SECRET_KEY.search(name) else scrub(item, depth + 1)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else list(value)
        out_list = [scrub(v, depth + 1) for v in items[:MAX_ITEMS]]
        if len(items) > MAX_ITEMS:
            out_list.append(f"…{len(items) - MAX_ITEMS} more")
        return out_list
    return _text(value)


def _body(user: Any, ref: Any = None, client: Any = None, event_id: str | None = None) -> dict[str, Any]:
    return {
        "v": SCHEMA_VERSION,
        "id": event_id or new_event_id(),
        "user": _text(user),
        "ref": _text(ref),
        "client": _text(client),
    }


# -- builders, one per kind ------------------------------------------------------------------------


def decision_event(
    *,
    decision: DecisionVerdict,
    user: str | None,
    method: str,
    path: str,
    permission: str | None = None,
    scope: str | None = None,
    object: str | None = None,
    route: str | None = None,
    mode: str = "enforce",
    roles: Iterable[str] = (),
    reasons: Iterable[str] | str = (),
    latency_us: int | None = None,
    ref: str | None = None,
    client: str | None = None,
    auth: str | None = None,
    ts: float | None = None,
) -> AuditEvent:
    """Every authorization decision: ``allow``, ``deny``, or ``would-deny`` (mode log: allowed, recorded)."""
    verdict = decision if decision in ("allow", "deny", "would-deny") else "deny"
    method_text = (_text(method) or "").upper()
    # One per request: plain short strings (the common case) are taken as they are, anything
    # else goes through the cleaning helpers, so the body is the same either way.
    body = {
        "v": SCHEMA_VERSION,
        "id": new_event_id(),
        "user": user if user.__class__ is str and len(user) <= MAX_TEXT else _text(user),
        "ref": None if ref is None else _text(ref),
        "client": client if client.__class__ is str and len(client) <= MAX_TEXT else _text(client),
        "decision": verdict,
        "method": method_text,
        "path": (
            path
            if path.__class__ is str
            and len(path) <= MAX_TEXT
            and "?" not in path
            and "#" not in path
            and not path.startswith("/.rolegate/pass/")
            else clean_path(path)
        ),
        "permission": permission if permission.__class__ is str and len(permission) <= MAX_TEXT else _text(permission),
        "scope": None if scope is None else _text(scope),
        "object": None if object is None else _text(object),
        "route": route if route.__class__ is str and len(route) <= MAX_TEXT else _text(route),
        "mode": mode if mode.__class__ is str and len(mode) <= MAX_TEXT else _text(mode),
        "roles": [] if roles == () else _texts(roles),
        "reasons": _short_texts(reasons),
        "latency_us": latency_us if latency_us.__class__ is int else _int(latency_us),
        "auth": auth if auth.__class__ is str and len(auth) <= MAX_TEXT else _text(auth),
    }
    return AuditEvent("decision", body, ts=ts, droppable=verdict == "allow" and method_text in READ_METHODS)


def _short_texts(values: Any) -> list[str]:
    """``_texts(values)``, without the per-item calls when it is a short tuple/list of short strings."""
    if values.__class__ is tuple or values.__class__ is list:
        if len(values) <= MAX_ITEMS:
            for v in values:
                if v.__class__ is not str or len(v) > MAX_TEXT:
                    return _texts(values)
            return list(values)
    return _texts(values)


def request_event(
    *,
    user: str | None,
    method: str,
    path: str,
    status: int | None,
    route: str | None = None,
    upstream: str | None = None,
    latency_us: int | None = None,
    ref: str | None = None,
    client: str | None = None,
    ts: float | None = None,
) -> AuditEvent:
    """A write request (anything but GET/HEAD/OPTIONS) that was let through, with the upstream's status."""
    body = _body(user, ref, client)
    body.update(
        method=(_text(method) or "").upper(),
        path=clean_path(path),
        status=_int(status),
        route=_text(route),
        upstream=_text(upstream),
        latency_us=_int(latency_us),
    )
    return AuditEvent("request", body, ts=ts)


def admin_change_event(
    *,
    actor: str | None,
    target: str,
    action: str,
    before: Any,
    after: Any,
    via: str = "api",
    ref: str | None = None,
    client: str | None = None,
    ts: float | None = None,
) -> AuditEvent:
    """A change to roles, bindings, settings or grants, with the state before and after it."""
    body = _body(actor, ref, client)
    body.update(target=_text(target), action=_text(action), before=scrub(before), after=scrub(after), via=_text(via))
    return AuditEvent("admin_change", body, ts=ts)


def daypass_event(
    *,
    action: DaypassAction,
    pass_id: str,
    user: str | None,
    template: str | None = None,
    scope: str | None = None,
    holder: Mapping[str, Any] | None = None,
    reason: str | None = None,
    expires_at: float | None = None,
    method: str | None = None,
    path: str | None = None,
    ref: str | None = None,
    client: str | None = None,
    ts: float | None = None,
) -> AuditEvent:
    """A day pass issued, redeemed, used, expired or revoked. ``pass_id`` is the id, never the code."""
    body = _body(user, ref, client)
    body.update(
        action=_text(action),
        pass_id=_text(pass_id),
        template=_text(template),
        scope=_text(scope),
        holder=scrub(dict(holder)) if holder else None,
        reason=_text(reason),
        expires_at=_float(expires_at),
        method=_text(method.upper()) if isinstance(method, str) else None,
        path=clean_path(path),
    )
    return AuditEvent("daypass", body, ts=ts)


def sync_event(
    *,
    result: str,
    mode: str,
    summary: Mapping[str, Any],
    details: Mapping[str, Any] | None = None,
    error: str | None = None,
    user: str | None = None,
    ts: float | None = None,
) -> AuditEvent:
    """A directory sync: ``result`` applied / refused / failed / dry-run, counts and (bounded) details."""
    body = _body(user)
    body.update(
        result=_text(result),
        mode=_text(mode),
        summary=scrub(summary),
        details=scrub(details) if details is not None else None,
        error=_text(error),
    )
    return AuditEvent("sync", body, ts=ts)


def signin_event(
    *,
    user: str | None,
    method: str,
    outcome: str = "ok",
    reason: str | None = None,
    session_id: str | None = None,
    groups: Iterable[str] = (),
    ref: str | None = None,
    client: str | None = None,
    ts: float | None = None,
) -> AuditEvent:
    """A sign-in attempt (``outcome`` ok / failed). ``session_id`` must be the opaque hash, not the cookie."""
    body = _body(user, ref, client)
    body.update(
        method=_text(method),
        outcome=_text(outcome),
        reason=_text(reason),
        session=_text(session_id),
        groups=_texts(groups),
    )
    return AuditEvent("signin", body, ts=ts)


def signout_event(
    *,
    user: str | None,
    reason: str = "user",
    session_id: str | None = None,
    ref: str | None = None,
    client: str | None = None,
    ts: float | None = None,
) -> AuditEvent:
    """A session ended: ``reason`` user / expired / idle / disabled / revoked."""
    body = _body(user, ref, client)
    body.update(reason=_text(reason), session=_text(session_id))
    return AuditEvent("signout", body, ts=ts)

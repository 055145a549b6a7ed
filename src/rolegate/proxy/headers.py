"""Which headers cross the proxy, in each direction.

Request side: everything a client could use to impersonate rolegate
(``X-Rolegate-*`` in any case, any number of times) and every hop-by-hop
header (RFC 9110 §7.6.1, including the ones named by ``Connection``) is
dropped; framing (``Content-Length`` / ``Transfer-Encoding``), ``Host`` and
``X-Forwarded-*`` are always written by rolegate itself, never copied, so no
client header — not even ``Connection: X-Rolegate-User`` — can remove or
forge what rolegate adds. Names are compared with ``_`` read as ``-``: WSGI,
CGI and PHP backends see ``X_Rolegate_User`` and ``X-Rolegate-User`` as the
same ``HTTP_X_ROLEGATE_USER``, so an underscore form of any header rolegate
sets or strips is dropped too (``drop_underscore``: every name with an
underscore, as nginx does). Method-override headers are dropped: the method
rolegate authorized is the method the backend acts on.

Response side: hop-by-hop headers of the upstream are dropped; framing is
left to aiohttp's writer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from multidict import CIMultiDict

from rolegate.errors import BadRequest

__all__ = [
    "HOP_BY_HOP",
    "RESERVED_PREFIX",
    "connection_tokens",
    "upstream_request_head",
    "downstream_response_headers",
    "websocket_request_headers",
    "check_path_qs",
    "check_host",
]

RESERVED_PREFIX = b"x-rolegate-"

# RFC 9110 §7.6.1 plus the legacy ones proxies have always removed.
HOP_BY_HOP: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Request headers rolegate never copies because it writes its own value
# (framing, Host, forwarding chain) or because they are answered here
# (Expect: aiohttp already sent 100 Continue to the client).
_REQUEST_REWRITTEN: frozenset[bytes] = HOP_BY_HOP | frozenset(
    {
        b"content-length",
        b"host",
        b"expect",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        # Other client-supplied forwarding claims: never passed on, rolegate states the chain itself.
        b"forwarded",
        b"x-real-ip",
    }
)

# "Treat this GET as a DELETE" to frameworks that honour them (Symfony, Rails middleware, Express's
# method-override, ASP.NET): the backend would act on a method rolegate never authorized.
_METHOD_OVERRIDE: frozenset[bytes] = frozenset(
    {
        b"x-http-method-override",
        b"x-http-method",
        b"x-method-override",
    }
)

# Handshake headers aiohttp's ws_connect generates itself.
_WS_HANDSHAKE: frozenset[bytes] = frozenset(
    {
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
    }
)

_RESPONSE_DROPPED: frozenset[str] = frozenset(n.decode() for n in HOP_BY_HOP) | {"content-length"}

# Origin-form path plus query, already normalized: visible ASCII only, so no
# space, CR, LF or NUL can ever split the request line we write.
_PATH_QS = re.compile(rb"/[\x21-\x7e]*").fullmatch
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
# A Host header rolegate can route on and repeat upstream (RFC 9110 §7.2): a DNS name, an IPv4 or an
# [IPv6] literal, an optional port; ASCII only, so it is the same string to every later reader.
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~]*)(?::[0-9]{0,5})?").fullmatch


def check_host(host: str) -> str:
    """The request's Host, refused (400) unless it is a plain host name or address with an optional port."""
    if _HOST(host) is None:
        raise BadRequest(f"malformed Host header {host!r}")
    return host


def check_path_qs(path_qs: str) -> bytes:
    """Encode the upstream request target, refusing anything that could break framing."""
    try:
        raw = path_qs.encode("ascii")
    except UnicodeEncodeError:
        raise BadRequest(f"non-ASCII request target {path_qs!r}") from None
    if _PATH_QS(raw) is None:
        raise BadRequest(f"request target not in origin form: {path_qs!r}")
    return raw


def connection_tokens(values: Iterable[bytes]) -> set[bytes]:
    """Lower-cased header names listed in ``Connection`` header values."""
    names: set[bytes] = set()
    for value in values:
        for token in value.split(b","):
            token = token.strip().lower()
            if token:
                names.add(token)
    return names


def _drop_request_header(name: bytes, named: set[bytes], drop_underscore: bool = False) -> bool:
    """``name`` is lower-cased; ``named`` holds the names rolegate sets and those ``Connection`` lists,
    lower-cased with ``_`` read as ``-`` (see ``_dashed``)."""
    if b"_" in name:
        if drop_underscore:
            return True
        name = name.replace(b"_", b"-")  # what a CGI-style backend makes of it
    return (
        name in _REQUEST_REWRITTEN
        or name in _METHOD_OVERRIDE
        or name.startswith(RESERVED_PREFIX)
        or name.startswith(b"proxy-")
        or name in named
    )


def _dashed(names: Iterable[bytes]) -> set[bytes]:
    return {name.replace(b"_", b"-") for name in names}


def _encode_set_headers(set_headers: Mapping[str, str]) -> list[bytes]:
    out = []
    for name, value in set_headers.items():
        if not value:  # an empty value removes the client's header without sending one
            continue
        bname = name.encode("ascii")
        # A value derived from the client's (the Cookie header minus rolegate's cookies) goes back as the
        # bytes it came in as: aiohttp decoded them as UTF-8 with surrogateescape.
        bvalue = value.encode("utf-8", "surrogateescape")
        if _TOKEN(bname) is None or b"\r" in bvalue or b"\n" in bvalue or b"\0" in bvalue:
            # Our own headers: a bad one is a programming error, never sent.
            raise ValueError(f"refusing to send invalid header {name!r}")
        out.append(bname + b": " + bvalue + b"\r\n")
    return out


class EncodedHeaders(dict[str, str]):
    """``set_headers`` built once and reused for many requests: their wire form is encoded (and
    validated) on first use only. Treat as read-only once handed to the forwarder."""

    __slots__ = ("encoded", "names")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.encoded: list[bytes] | None = None
        self.names: frozenset[bytes] = frozenset(_dashed(name.lower().encode("ascii") for name in self))


def _set_header_lines(set_headers: Mapping[str, str]) -> list[bytes]:
    if set_headers.__class__ is EncodedHeaders:
        lines = set_headers.encoded
        if lines is None:
            lines = set_headers.encoded = _encode_set_headers(set_headers)
        return lines
    return _encode_set_headers(set_headers)


def upstream_request_head(
    method: str,
    target: bytes,
    raw_headers: Iterable[tuple[bytes, bytes]],
    *,
    host: bytes,
    client_addr: str,
    forwarded_proto: str,
    forwarded_host: str,
    set_headers: Mapping[str, str],
    framing: bytes,
    connection: bytes = b"keep-alive",
    trust_forwarded_for: bool = False,
    drop_underscore: bool = False,
) -> bytes:
    """The complete HTTP/1.1 request head to send upstream.

    ``framing`` is ``b"content-length: N\\r\\n"``, ``b"transfer-encoding: chunked\\r\\n"``
    or ``b""``: decided by the forwarder from what it will actually send. A header named in
    ``set_headers`` replaces the client's headers of that name. The client's ``X-Forwarded-For``
    is extended only when it comes from a trusted proxy; otherwise the chain starts at the peer.
    ``drop_underscore`` drops every client header with ``_`` in its name (``server.drop_underscore_headers``).
    """
    raw = raw_headers if isinstance(raw_headers, tuple) else tuple(raw_headers)
    if set_headers.__class__ is EncodedHeaders:
        named: set[bytes] = set(set_headers.names)
    else:
        named = _dashed(name.lower().encode("ascii") for name in set_headers) if set_headers else set()
    xff_prior: list[bytes] = []
    for name, value in raw:
        lname = name.lower()
        if lname == b"connection":
            named |= _dashed(connection_tokens((value,)))
        elif lname == b"x-forwarded-for" and trust_forwarded_for:
            xff_prior.append(value.strip())
    parts = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\nhost: ", host, b"\r\n"]
    for name, value in raw:
        if _drop_request_header(name.lower(), named, drop_underscore):
            continue
        parts.append(name)
        parts.append(b": ")
        parts.append(value)
        parts.append(b"\r\n")
    xff = b", ".join([v for v in xff_prior if v] + [client_addr.encode("latin-1")])
    parts.append(b"x-forwarded-for: " + xff + b"\r\n")
    parts.append(b"x-forwarded-proto: " + forwarded_proto.encode("latin-1") + b"\r\n")
    if forwarded_host:
        parts.append(b"x-forwarded-host: " + forwarded_host.encode("latin-1") + b"\r\n")
    parts.extend(_set_header_lines(set_headers))
    parts.append(framing)
    parts.append(b"connection: " + connection + b"\r\n\r\n")
    return b"".join(parts)


def websocket_request_headers(
    raw_headers: Iterable[tuple[bytes, bytes]],
    *,
    client_addr: str,
    forwarded_proto: str,
    forwarded_host: str,
    set_headers: Mapping[str, str],
    trust_forwarded_for: bool = False,
    drop_underscore: bool = False,
) -> CIMultiDict[str]:
    """Headers for the upstream WebSocket handshake (aiohttp adds the handshake itself)."""
    raw = tuple(raw_headers)
    named: set[bytes] = _dashed(name.lower().encode("ascii") for name in set_headers)
    xff_prior: list[str] = []
    for name, value in raw:
        lname = name.lower()
        if lname == b"connection":
            named |= _dashed(connection_tokens((value,)))
        elif lname == b"x-forwarded-for" and trust_forwarded_for:
            xff_prior.append(value.strip().decode("latin-1"))
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in raw:
        lname = name.lower()
        if lname.replace(b"_", b"-") in _WS_HANDSHAKE or _drop_request_header(lname, named, drop_underscore):
            continue
        out.add(_ws_text(name), _ws_text(value))
    out["X-Forwarded-For"] = ", ".join([v for v in xff_prior if v] + [client_addr])
    out["X-Forwarded-Proto"] = forwarded_proto
    if forwarded_host:
        out["X-Forwarded-Host"] = forwarded_host
    _encode_set_headers(set_headers)  # same validation as the HTTP path
    for set_name, set_value in set_headers.items():
        if set_value:
            out[set_name] = _ws_text(set_value.encode("utf-8", "surrogateescape"))
    return out


def _ws_text(raw: bytes) -> str:
    """A header for aiohttp's client, which writes text as UTF-8: bytes that are not UTF-8 cannot be
    passed on unchanged, so the handshake is refused (400) rather than sent altered."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"header bytes that are not UTF-8 in a WebSocket handshake: {raw[:64]!r}") from None


def downstream_response_headers(headers: Mapping[str, str], *, keep_length: bool) -> CIMultiDict[str]:
    """Upstream response headers minus hop-by-hop ones, for the client response."""
    named: set[str] = set()
    for value in headers.getall("Connection", ()) if hasattr(headers, "getall") else ():
        for token in value.split(","):
            token = token.strip().lower()
            if token:
                named.add(token)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lname = name.lower()
        if lname in _RESPONSE_DROPPED or lname.startswith("proxy-") or lname in named:
            if keep_length and lname == "content-length" and lname not in named:
                out.add(name, value)
            continue
        out.add(name, value)
    return out

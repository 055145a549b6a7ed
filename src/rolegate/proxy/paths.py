"""Request path normalization: the one canonical path that is authorized and forwarded.

``normalize_path`` takes the raw path of the request target (still
percent-encoded, query already split off) and returns a canonical form, or
raises :class:`~rolegate.errors.AmbiguousPath` (400) when the path could be read
differently by rolegate and by the upstream. The canonical form is what the
route table matches (through ``split_segments``) and, byte for byte, what is
sent upstream, so "authorized path" and "forwarded path" cannot drift apart.

Rules, in short:

* must start with ``/``; at most ``max_length`` characters (raw and canonical);
* rejected: ``;`` (path parameters), literal ``\\``, ``?`` and ``#``, control
  characters (C0, DEL, C1; raw or encoded), ``%2F`` and ``%5C``, malformed
  escapes, encoded bytes that are not valid UTF-8 (overlong forms such as
  ``%C0%AE`` included), a dot segment spelled with ``%2E``, a ``..`` that climbs
  above the root, and non-ASCII characters whose NFKC form would introduce a
  ``/``, ``\\`` or a dot segment (for upstreams that fold Unicode);
* duplicate slashes are **collapsed** (``//evil.com/x`` -> ``/evil.com/x``), and
  the collapsed form is what is forwarded;
* ``.`` and ``..`` segments are resolved as in RFC 3986 section 5.2.4; a trailing
  slash is kept (``/a/b/..`` -> ``/a/``) because upstreams may tell ``/a`` from ``/a/``;
* escapes of unreserved characters are decoded (``%41`` -> ``A``); every other
  escape stays encoded with upper-case hex (``%3b`` -> ``%3B``; ``%252e`` stays
  ``%252e`` because ``%25`` is never decoded, so nothing is decoded twice); raw characters that are not allowed in a path (space,
  ``"<>[]^`{|}``, non-ASCII) are percent-encoded (UTF-8).
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote

from rolegate.errors import AmbiguousPath

__all__ = ["MAX_PATH_LENGTH", "normalize_path", "split_segments"]

MAX_PATH_LENGTH = 8192

# RFC 3986 pchar without "%" and without ";" (path parameters are refused).
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_RAW_OK = _UNRESERVED | frozenset("!$&'()*+,=:@")
# Printable ASCII that may not appear raw in a path but is harmless once encoded.
_RAW_ENCODE = frozenset(' "<>[]^`{|}')
# Printable ASCII that is refused raw: ";" parameters, "\" separators, and
# "?"/"#" that cannot be part of a path whose query was already split off.
_RAW_REJECT = frozenset(";\\?#")
_HEX = frozenset("0123456789abcdefABCDEF")

# Fast path: plain segments of pchar (no "%", no ";"), no empty segment, no dot
# segment; an optional trailing slash. Such a path is already canonical.
_CANONICAL_PLAIN = re.compile(
    r"(?:/(?!\.\.?(?:/|\Z))[A-Za-z0-9\-._~!$&'()*+,=:@]+)+/?|/"
)


def _reject(reason: str, raw: str) -> AmbiguousPath:
    # Only a bounded prefix goes into the (internal) detail, never to the client.
    return AmbiguousPath(f"{reason}: {raw[:200]!r}")


def normalize_path(raw: str, max_length: int = MAX_PATH_LENGTH) -> str:
    """Return the canonical form of a raw request path, or raise ``AmbiguousPath``."""
    if len(raw) > max_length:
        raise _reject("path too long", raw)
    if _CANONICAL_PLAIN.fullmatch(raw) is not None:
        return raw
    if not raw.startswith("/"):
        raise _reject("path does not start with '/'", raw)
    parts = raw.split("/")
    last = len(parts) - 1
    out: list[str] = []
    trailing_slash = False
    for i in range(1, last + 1):
        seg = parts[i]
        if not seg:
            # Collapse "//"; only the final empty part means a trailing slash.
            trailing_slash = i == last
            continue
        canon, dot_encoded = _canonical_segment(seg, raw)
        if canon == "." or canon == "..":
            if dot_encoded:
                raise _reject("encoded dot segment", raw)
            if canon == "..":
                if not out:
                    raise _reject("'..' above the root", raw)
                out.pop()
            trailing_slash = i == last
            continue
        out.append(canon)
        trailing_slash = False
    if not out:
        return "/"
    path = "/" + "/".join(out)
    if trailing_slash:
        path += "/"
    if len(path) > max_length:
        raise _reject("path too long once encoded", raw)
    return path


def _canonical_segment(seg: str, raw: str) -> tuple[str, bool]:
    """Canonicalize one non-empty segment; return it and whether it had an encoded dot."""
    out: list[str] = []
    pending = bytearray()  # a run of non-ASCII bytes, validated as UTF-8 at its end
    dot_encoded = False
    non_ascii = False
    i = 0
    n = len(seg)
    while i < n:
        c = seg[i]
        if c == "%":
            if i + 2 >= n:
                raise _reject("truncated percent escape", raw)
            h1 = seg[i + 1]
            h2 = seg[i + 2]
            if h1 not in _HEX or h2 not in _HEX:
                raise _reject("invalid percent escape", raw)
            b = int(seg[i + 1 : i + 3], 16)
            i += 3
            if b >= 0x80:
                non_ascii = True
                pending.append(b)
                continue
            if pending:
                _flush_utf8(pending, out, raw)
            ch = chr(b)
            if ch in _UNRESERVED:
                out.append(ch)
                if ch == ".":
                    dot_encoded = True
            elif b < 0x20 or b == 0x7F:
                raise _reject("encoded control character", raw)
            elif ch == "/" or ch == "\\":
                raise _reject("encoded path separator", raw)
            else:
                out.append(f"%{b:02X}")
            continue
        i += 1
        o = ord(c)
        if o >= 0x80:
            non_ascii = True
            try:
                pending += c.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogate (undecodable request bytes)
                raise _reject("invalid character", raw) from None
            continue
        if pending:
            _flush_utf8(pending, out, raw)
        if c in _RAW_OK:
            out.append(c)
        elif o < 0x20 or o == 0x7F:
            raise _reject("control character", raw)
        elif c in _RAW_REJECT:
            raise _reject(f"character {c!r} not allowed", raw)
        elif c in _RAW_ENCODE:
            out.append(f"%{o:02X}")
        else:  # pragma: no cover - every printable ASCII character is classified above
            raise _reject("unexpected character", raw)
    if pending:
        _flush_utf8(pending, out, raw)
    canon = "".join(out)
    if non_ascii:
        _check_unicode_folding(canon, raw)
    return canon, dot_encoded


def _flush_utf8(pending: bytearray, out: list[str], raw: str) -> None:
    """Validate a run of non-ASCII bytes as UTF-8 and append it percent-encoded."""
    try:
        text = pending.decode("utf-8")
    except UnicodeDecodeError:
        raise _reject("invalid UTF-8", raw) from None
    for ch in text:
        if 0x80 <= ord(ch) <= 0x9F:
            raise _reject("C1 control character", raw)
    out.append("".join(f"%{b:02X}" for b in pending))
    pending.clear()


def _check_unicode_folding(canon: str, raw: str) -> None:
    # An upstream that applies NFKC (some frameworks and file systems do) must
    # not see a separator or a dot segment that rolegate did not see.
    folded = unicodedata.normalize("NFKC", unquote(canon))
    if "/" in folded or "\\" in folded or folded in (".", ".."):
        raise _reject("character folds to a separator or dot segment", raw)


def split_segments(path: str) -> tuple[str, ...]:
    """Split a *normalized* path into decoded segments for route matching.

    ``/`` gives ``()``; a trailing slash gives a final empty segment
    (``/a/`` -> ``("a", "")``). Decoding once is safe: normalization refused
    ``%2F``, so a decoded segment never contains ``/``.
    """
    if path == "/":
        return ()
    segments = path[1:].split("/")
    if "%" not in path:
        return tuple(segments)
    return tuple(unquote(s, errors="strict") if "%" in s else s for s in segments)

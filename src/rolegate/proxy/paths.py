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

from rolegate.errors import AmbiguousPath

__all__ = ["MAX_PATH_LENGTH", "normalize_path", "split_segments"]

MAX_PATH_LENGTH = 8192

# RFC 3986 unreserved characters: the only escapes that are decoded. The
# regexes below spell out pchar without "%" and ";" (parameters are refused).
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Printable ASCII that may not appear raw in a path but is harmless once encoded.
_RAW_ENCODE = frozenset(' "<>[]^`{|}')
# Printable ASCII that is refused raw: ";" parameters, "\" separators, and
# "?"/"#" that cannot be part of a path whose query was already split off.
_RAW_REJECT = frozenset(";\\?#")

# Fast path: plain segments of pchar (no "%", no ";"), no empty segment, no dot
# segment; an optional trailing slash. Such a path is already canonical.
_CANONICAL_PLAIN = re.compile(r"(?:/(?!\.\.?(?:/|\Z))[A-Za-z0-9\-._~!$&'()*+,=:@]+)+/?|/")
_HEX_BYTE = [f"%{b:02X}" for b in range(256)]
# What an encoded ASCII byte becomes: unreserved characters decoded, controls
# and separators refused (None), everything else kept encoded.
_ESCAPED_ASCII: list[str | None] = [
    chr(b) if chr(b) in _UNRESERVED else None if b < 0x20 or b == 0x7F or chr(b) in "/\\" else _HEX_BYTE[b]
    for b in range(128)
]
# A segment as tokens: plain runs, runs of well-formed escapes, any other character.
_TOKENS = re.compile(r"([A-Za-z0-9\-._~!$&'()*+,=:@]+)|((?:%[0-9A-Fa-f]{2})+)|(.)", re.S)
# One plain segment, for the slow path's common case.
_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,=:@]+")
# Runs of escapes in a canonical path (upper-case hex, valid UTF-8 by construction).
_ESCAPES = re.compile(r"(?:%[0-9A-Fa-f]{2})+")


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
    if _PLAIN_SEGMENT.fullmatch(seg) is not None:
        return seg, False
    out: list[str] = []
    pending = bytearray()  # a run of non-ASCII bytes, validated as UTF-8 at its end
    dot_encoded = False
    needs_fold_check = False  # some non-ASCII text is not already NFKC
    for plain, escapes, c in _TOKENS.findall(seg):
        if plain:
            if pending:
                needs_fold_check |= _flush_utf8(pending, out, raw)
            out.append(plain)
            continue
        if escapes:
            for b in bytes.fromhex(escapes.replace("%", "")):
                if b >= 0x80:
                    pending.append(b)
                    continue
                if pending:
                    needs_fold_check |= _flush_utf8(pending, out, raw)
                text = _ESCAPED_ASCII[b]
                if text is None:
                    raise _reject(f"encoded character %{b:02X} not allowed", raw)
                if b == 0x2E:
                    dot_encoded = True
                out.append(text)
            continue
        o = ord(c)
        if o >= 0x80:
            try:
                pending += c.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogate (undecodable request bytes)
                raise _reject("invalid character", raw) from None
            continue
        if pending:
            needs_fold_check |= _flush_utf8(pending, out, raw)
        if c == "%":
            raise _reject("invalid percent escape", raw)
        if c in _RAW_ENCODE:
            out.append(_HEX_BYTE[o])
        elif c in _RAW_REJECT:
            raise _reject(f"character {c!r} not allowed", raw)
        else:
            raise _reject("control character", raw)
    if pending:
        needs_fold_check |= _flush_utf8(pending, out, raw)
    canon = "".join(out)
    if needs_fold_check:
        _check_unicode_folding(canon, raw)
    return canon, dot_encoded


def _flush_utf8(pending: bytearray, out: list[str], raw: str) -> bool:
    """Validate a run of non-ASCII bytes as UTF-8 and append it percent-encoded.

    Return whether NFKC would change the text (then the segment needs the folding check).
    """
    try:
        text = pending.decode("utf-8")
    except UnicodeDecodeError:
        raise _reject("invalid UTF-8", raw) from None
    for ch in text:
        if ord(ch) <= 0x9F:
            raise _reject("C1 control character", raw)
    out.append("".join([_HEX_BYTE[b] for b in pending]))
    pending.clear()
    return not unicodedata.is_normalized("NFKC", text)


def _check_unicode_folding(canon: str, raw: str) -> None:
    # An upstream that applies NFKC (some frameworks and file systems do) must
    # not see a separator or a dot segment that rolegate did not see.
    folded = unicodedata.normalize("NFKC", _decode(canon))
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
    return tuple(_decode(s) if "%" in s else s for s in segments)


def _decode_run(m: re.Match[str]) -> str:
    return bytes.fromhex(m.group().replace("%", "")).decode("utf-8")


def _decode(canonical: str) -> str:
    """Percent-decode canonical text once (escapes are upper-case and valid UTF-8)."""
    return _ESCAPES.sub(_decode_run, canonical)

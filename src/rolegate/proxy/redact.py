"""Response redaction: remove named JSON fields (prices, rates) for callers without a permission.

Pure: bytes in, bytes out; the pipeline decides whether a response is redacted
(route ``redact``, caller lacks ``unless``) and never buffers beyond ``max_bytes``.

Field paths: dotted keys with ``[*]`` for "every element of this array":
``amount``, ``lines[*].price``, ``data[*].lines[*].price``, ``[*].price`` (top-level
array). The last step must be a key: the field to remove.

Fails closed. A body the redaction cannot read — not JSON by its type or its bytes, over
``max_bytes``, compressed, nested past the parser's limit — is never relayed as it came: the
:class:`RedactionFilter` refuses it with :class:`Unredactable` (502 with a reference id, its
reason logged once by the error renderer), unless the route says ``on_unredactable: pass``.

Bytes, not text: JSON that is not valid UTF-8 (an app echoing a header holding ``\\xff``, a
stored field) is decoded with ``surrogateescape`` so every byte survives parsing, and it is
always written back (fields removed or not) as valid UTF-8 in which each lone surrogate — a
stray byte, or a ``\\udcff`` escape the app wrote — is a ``\\uXXXX`` escape. So what the client
receives never holds bytes a lenient decoder could read as a different key than we did.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
from collections.abc import Sequence
from typing import Any

from multidict import CIMultiDictProxy

from rolegate.errors import ConfigError, RolegateError, UpstreamUnavailable

__all__ = ["RedactionFilter", "Redactor", "UnreadableBody", "Unredactable", "compile_redaction", "parse_field_path"]

log = logging.getLogger("rolegate.redact")

_KEY = re.compile(r"[A-Za-z0-9_\-$@]+")
_STEP = re.compile(r"([A-Za-z0-9_\-$@]+)?((?:\[\*\])*)\Z")
_EACH = "[*]"  # trie key for "every element"; cannot clash with a JSON key step (brackets refused)
# Lone surrogates in a re-encoded document: from surrogateescape'd bytes or from the app's own escapes.
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# step -> subtrie; a subtrie of None means "remove this key here".
_Trie = dict[str, "_Trie | None"]


class UnreadableBody(ValueError):
    """The body is not a JSON document the redactor can rewrite; the message says why."""


class Unredactable(UpstreamUnavailable):
    """A response on a redacted route that the redaction cannot read: refused, never relayed."""

    public_message = "The application's answer could not be checked before showing it to you."


def parse_field_path(path: str) -> tuple[str, ...]:
    """``data[*].lines[*].price`` -> ``("data", "[*]", "lines", "[*]", "price")``; ValueError if invalid."""
    if not isinstance(path, str) or not path or path != path.strip():
        raise ValueError(f"{path!r}: empty or padded field path")
    steps: list[str] = []
    for i, part in enumerate(path.split(".")):
        m = _STEP.match(part)
        if m is None or not part:
            raise ValueError(f"{path!r}: bad step {part!r}; write key, key[*] or [*] (top-level array)")
        key, each = m.group(1), m.group(2)
        if key is None and i > 0:
            raise ValueError(f"{path!r}: [*] without a key is only allowed at the start")
        if key is not None:
            steps.append(key)
        steps.extend([_EACH] * (len(each) // 3))
    if steps[-1] == _EACH:
        raise ValueError(f"{path!r}: the last step must be a field name to remove")
    return tuple(steps)


class Redactor:
    """Removes the compiled fields from a JSON document."""

    __slots__ = ("fields", "_trie")

    def __init__(self, fields: tuple[str, ...], trie: _Trie) -> None:
        self.fields = fields
        # step -> subtrie; a subtrie of None means "remove this key here".
        self._trie = trie

    def redact(self, body: bytes) -> bytes:
        """The body without the fields; the same bytes when nothing matched and they are valid UTF-8.

        UnreadableBody when ``body`` is not one JSON document (in UTF-8, stray bytes allowed).
        """
        rewrite = False
        if body.startswith(codecs.BOM_UTF8):
            body, rewrite = body[3:], True  # RFC 8259 lets a parser ignore it; we write none back
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            # Keep every byte (as U+DC80..U+DCFF) and never relay the original: see the module doc.
            text, rewrite = body.decode("utf-8", "surrogateescape"), True
        try:
            doc = json.loads(text)
        except RecursionError:
            raise UnreadableBody("the JSON body is nested deeper than the parser's limit") from None
        except ValueError as exc:  # JSONDecodeError, or an integer past Python's digit limit
            raise UnreadableBody(f"the body is not valid JSON ({_first_line(exc)})") from None
        if not _strip(doc, self._trie) and not rewrite:
            return body
        try:
            # allow_nan=False: 1e400 parsed to inf must not come back as Infinity, which is not JSON.
            out = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (ValueError, RecursionError) as exc:
            raise UnreadableBody(f"the redacted body cannot be written back ({_first_line(exc)})") from None
        # Surrogates only ever sit inside JSON strings here, where the escape is their exact spelling.
        return _SURROGATE.sub(_escape, out).encode("utf-8")

    def apply(self, body: bytes) -> bytes | None:
        """Like :meth:`redact`, but None when the body cannot be redacted."""
        try:
            return self.redact(body)
        except UnreadableBody:
            return None

    def __repr__(self) -> str:
        return f"Redactor({list(self.fields)!r})"


class RedactionFilter:
    """The forwarder's response filter for one redacted route, used for callers who lack ``unless``.

    Called with the upstream's status and headers before any body byte is read (see
    :mod:`rolegate.proxy.forward`): a JSON body that fits ``max_bytes`` is read whole and
    redacted; anything else is :meth:`unreadable`. Bodiless answers (HEAD, 204, 304) never
    reach it; the forwarder drops their ``Content-Length``, which describes the unredacted body.
    """

    __slots__ = ("redactor", "max_bytes", "fails_closed", "label", "_transform")

    def __init__(self, redactor: Redactor, max_bytes: int, on_unredactable: str = "fail", label: str = "") -> None:
        self.redactor = redactor
        self.max_bytes = max_bytes
        self.fails_closed = on_unredactable != "pass"
        self.label = label
        self._transform = _Transform(self)

    def __call__(self, status: int, headers: CIMultiDictProxy[str]) -> _Transform | None:
        encodings = [e.strip().lower() for v in headers.getall("Content-Encoding", ()) for e in v.split(",")]
        if any(e not in ("", "identity") for e in encodings):
            # We asked for identity; an app that compresses anyway is not read, nor relayed.
            self.unreadable(f"the body is compressed ({', '.join(encodings)})")
            return None
        content_type = headers.get("Content-Type", "")
        if not _is_json(content_type):
            self.unreadable(f"{content_type[:100] or 'an untyped'} response is not JSON")
            return None
        length = headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            self.unreadable(f"{length}-byte body exceeds redact.max_bytes ({self.max_bytes})")
            return None
        return self._transform

    def unreadable(self, why: str) -> None:
        """Refuse (raise Unredactable) or, with ``on_unredactable: pass``, log and let it through."""
        where = f"route {self.label}: " if self.label else ""
        if self.fails_closed:
            raise Unredactable(f"redaction refused the response: {where}{why}")
        log.info("redaction skipped (on_unredactable: pass): %s%s; relayed untouched", where, why)
        return None


class _Transform:
    """The ``BodyTransform`` of a RedactionFilter: the whole body in, the redacted body out."""

    __slots__ = ("filter", "limit")

    def __init__(self, owner: RedactionFilter) -> None:
        self.filter = owner
        self.limit = owner.max_bytes

    def __call__(self, body: bytes) -> bytes:
        if not body:
            return body  # nothing to hide (a chunked body that turned out empty)
        try:
            return self.filter.redactor.redact(body)
        except UnreadableBody as exc:
            self.filter.unreadable(str(exc))
            return body

    def oversize(self, size: int) -> RolegateError | None:
        """A body of unannounced length grew past the cap: the error to answer, or None to relay it."""
        try:
            self.filter.unreadable(f"the body grew past redact.max_bytes ({self.limit}) at {size} bytes")
        except Unredactable as exc:
            return exc
        return None


def _is_json(content_type: str) -> bool:
    """``application/json``, ``text/json``, ``application/problem+json``: any ``json`` or ``+json`` subtype."""
    subtype = content_type.split(";", 1)[0].strip().lower().partition("/")[2]
    return subtype == "json" or subtype.endswith("+json")


def _escape(match: re.Match[str]) -> str:
    return "\\u%04x" % ord(match.group())


def _first_line(exc: BaseException) -> str:
    return str(exc).split("\n", 1)[0][:200]


def _strip(node: Any, trie: _Trie) -> bool:
    """Remove matches below ``node``; True if anything was removed."""
    removed = False
    if isinstance(node, dict):
        for key, sub in trie.items():
            if key == _EACH or key not in node:
                continue
            if sub is None:
                del node[key]
                removed = True
            else:
                removed |= _strip(node[key], sub)
    elif isinstance(node, list):
        sub = trie.get(_EACH)
        if sub is not None:
            for item in node:
                removed |= _strip(item, sub)
    return removed


def compile_redaction(fields: Sequence[str]) -> Redactor:
    """Compile field paths into a ``Redactor``; ConfigError lists every invalid path."""
    problems: list[str] = []
    trie: _Trie = {}
    for field in fields:
        try:
            steps = parse_field_path(field)
        except ValueError as exc:
            problems.append(f"redact.fields: {exc}")
            continue
        node = trie
        for step in steps[:-1]:
            nxt = node.get(step, {})
            if nxt is None:
                break  # a parent field is removed whole already
            node[step] = nxt
            node = nxt
        else:
            node[steps[-1]] = None  # removing the whole field beats any deeper path under it
    if problems:
        raise ConfigError(problems)
    return Redactor(tuple(fields), trie)

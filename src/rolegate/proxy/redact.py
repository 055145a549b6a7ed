"""Response redaction: remove named JSON fields (prices, rates) for callers without a permission.

Pure: bytes in, bytes out; the pipeline decides whether a response is redacted
(route ``redact``, caller lacks ``unless``) and never buffers beyond ``max_bytes``.

Field paths: dotted keys with ``[*]`` for "every element of this array":
``amount``, ``lines[*].price``, ``data[*].lines[*].price``, ``[*].price`` (top-level
array). The last step must be a key: the field to remove.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from rolegate.errors import ConfigError

__all__ = ["Redactor", "compile_redaction", "parse_field_path"]

_KEY = re.compile(r"[A-Za-z0-9_\-$@]+")
_STEP = re.compile(r"([A-Za-z0-9_\-$@]+)?((?:\[\*\])*)\Z")
_EACH = "[*]"  # trie key for "every element"; cannot clash with a JSON key step (brackets refused)


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

    def __init__(self, fields: tuple[str, ...], trie: dict[str, Any]) -> None:
        self.fields = fields
        # step -> subtrie; a subtrie of None means "remove this key here".
        self._trie = trie

    def apply(self, body: bytes) -> bytes | None:
        """The body without the fields; the same bytes when nothing matched; None if not JSON."""
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError, TypeError):
            return None
        if not _strip(doc, self._trie):
            return body
        try:
            return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        except (ValueError, RecursionError):
            return None

    def __repr__(self) -> str:
        return f"Redactor({list(self.fields)!r})"


def _strip(node: Any, trie: dict[str, Any]) -> bool:
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
    trie: dict[str, Any] = {}
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

"""The text a Store keeps for a value: compact JSON with sorted keys.

The stdlib encoder writes every value, floats included (a NaN as ``NaN``, read back as NaN by SQLite's reader and
refused by PostgreSQL's jsonb, as ever). A ``FloatFree`` document — a dict its maker promises holds only str, int,
bool, None and lists, tuples and dicts of them — is written by orjson instead, twenty times faster: a directory
snapshot's million user rows were 3.2 s of a full sync's save in the stdlib encoder, 0.15 s in orjson. orjson
writes those types as the stdlib reads them back (it would write a NaN as ``null``, hence the promise; non-ASCII
text as UTF-8 rather than escapes, the same JSON). Anything orjson refuses (a key that is not a string, an int
beyond 64 bits, a lone surrogate) goes to the stdlib encoder, which decides as it always did.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


class FloatFree(dict[str, Any]):
    """A document of str, int, bool, None, lists, tuples and dicts only: no float anywhere in it."""

    __slots__ = ()


def dumps(value: Any) -> str:
    """``value``'s stored text."""
    if type(value) is FloatFree:
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode("utf-8")
        except TypeError:
            pass
    return _ENCODER.encode(value)

"""Value types shared by the config sections: durations, sizes, shares, listen addresses."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*\Z")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
# Longer than anything a person means (about 31,700 years) and well inside timedelta's range (999,999,999 days).
_LONGEST_DURATION = 1e12
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB|k|K|M|G)?\s*\Z")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "MB": 10**6,
    "GB": 10**9,
    "k": 1024,
    "K": 1024,
    "KiB": 1024,
    "M": 1024**2,
    "MiB": 1024**2,
    "G": 1024**3,
    "GiB": 1024**3,
}


class Section(BaseModel):
    """Base of every config section: immutable, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def parse_duration(value: Any) -> timedelta:
    """'30s', '5m', '12h', '7d', '400d', '250ms' or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m, 12h or 7d")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 5m, 12h or 7d")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if not math.isfinite(seconds) or seconds > _LONGEST_DURATION:
        # timedelta would raise OverflowError (not a ValueError): a config error or an API 400, never a crash.
        raise ValueError(f"{value!r} is not a duration rolegate can hold (at most {_LONGEST_DURATION:.0f} seconds)")
    return timedelta(seconds=seconds)


def parse_size(value: Any) -> int:
    """'10MiB', '8KiB', '1GB' or a number of bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 8KiB or 10MiB")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        size = int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])
    else:
        raise ValueError(f"{value!r} is not a size; write e.g. 8KiB, 10MiB or 1GiB")
    if size < 0:
        raise ValueError("a size cannot be negative")
    return size


def _format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit, factor in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= factor and seconds % factor == 0:
            return f"{int(seconds // factor)}{unit}"
    return f"{seconds:g}s"


Duration = Annotated[timedelta, BeforeValidator(parse_duration), PlainSerializer(_format_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]


def parse_listen(value: Any) -> tuple[str, int]:
    """'127.0.0.1:8080', '[::1]:8080', ':8080' or '8080' -> (host, port)."""
    if isinstance(value, int) and not isinstance(value, bool):
        host, port_text = "0.0.0.0", str(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            host, _, port_text = text[1:].partition("]:")
        elif ":" in text:
            host, _, port_text = text.rpartition(":")
        else:
            host, port_text = "0.0.0.0", text
        host = host or "0.0.0.0"
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        return str(value[0]), int(value[1])
    else:
        raise ValueError("expected host:port, e.g. 127.0.0.1:8080")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{value!r}: the port must be a number from 0 to 65535")
    return host, int(port_text)


Listen = Annotated[
    tuple[str, int],
    BeforeValidator(parse_listen),
    PlainSerializer(lambda v: f"[{v[0]}]:{v[1]}" if ":" in v[0] else f"{v[0]}:{v[1]}"),
]


def parse_share(value: Any) -> float:
    """'10%' or 0.1 -> 0.1 (a share of a whole)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        number = float(value.strip()[:-1])
        share = number / 100
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        share = float(value)
    else:
        raise ValueError(f"{value!r} is not a share; write e.g. 10% or 0.1")
    if not 0 <= share <= 1:
        raise ValueError("a share must be between 0% and 100%")
    return share


Share = Annotated[float, BeforeValidator(parse_share)]

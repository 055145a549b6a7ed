"""Whether to record an allowed read: ``audit.reads`` (enabled, sample). Denials and writes always are."""

from __future__ import annotations

import random
from typing import Callable


def read_sampler(enabled: bool, sample: float, rng: Callable[[], float] = random.random) -> Callable[[], bool]:
    """A zero-argument function answering "record this allowed read?", cheapest for each setting."""
    if not enabled or sample <= 0.0:
        return lambda: False
    if sample >= 1.0:
        return lambda: True
    return lambda: rng() < sample

"""Pausing the cyclic garbage collector while a snapshot's few hundred thousand objects are made."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = True


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic GC while a run allocates a few hundred thousand objects.

    Every collection of the oldest generation walks all live objects, so building a 100k-user
    snapshot with the collector on spends about half its time collecting nothing (the entries
    hold no cycles); reference counting still frees everything meanwhile.
    """
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()

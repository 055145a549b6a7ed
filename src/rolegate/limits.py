"""Limits shared by more than one module, defined once.

Only constants, no imports: any package may import this without joining an import cycle.
"""

from __future__ import annotations

from typing import Final

# A cache keyed by a Cookie (or Authorization) header keeps a header up to this length as it is; a longer
# one is parsed every time, or kept as a digest: a client sending 16 KiB headers cannot make 10,000
# remembered entries cost 160 MiB.
COOKIE_KEY_LENGTH: Final = 2048

__all__ = ["COOKIE_KEY_LENGTH"]

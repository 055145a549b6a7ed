"""The lab's one exception: a component that could not start or do what was asked."""
from __future__ import annotations


class LabError(RuntimeError):
    """A lab component failed; the message carries the reason and its log tail."""

"""Permissions and scopes in words, for people: "Add documents in Building A".

``access_requests.labels`` names them where the derived words are not good enough; otherwise a
permission ``resource:action`` reads as "Action resource" and a scope ``type:id`` as "Type id".
"""

from __future__ import annotations

from typing import Any


def _labels(config: Any) -> dict[str, str]:
    section = getattr(config, "access_requests", None)
    return section.labels if section is not None else {}


def permission_words(config: Any, permission: str) -> str:
    """``documents:add`` -> "Add documents" (or its label)."""
    label = _labels(config).get(permission)
    if label:
        return label
    resource, _, action = permission.rpartition(":")
    resource = resource.replace(":", " ").replace("_", " ")
    return f"{action.replace('_', ' ').capitalize()} {resource}".strip()


def scope_words(config: Any, scope: str | None) -> str:
    """``building:a`` -> "Building a" (or its label, or its type's label with {id} filled in); None: everywhere."""
    if scope is None:
        return "everywhere"
    labels = _labels(config)
    if scope in labels:
        return labels[scope]
    kind, _, ident = scope.partition(":")
    template = labels.get(kind)
    if template:
        return template.replace("{id}", ident)
    return f"{kind.replace('_', ' ').capitalize()} {ident}"


def attempt_words(config: Any, permission: str, scope: str | None) -> str:
    """What someone tried, in words: "Add documents in Building A" ("View invoices" without a scope)."""
    what = permission_words(config, permission)
    return what if scope is None else f"{what} in {scope_words(config, scope)}"


def duration_words(seconds: float) -> str:
    """How long, as people say it: "2 h", "1 h 30 min", "3 d", "1 d 4 h", "20 s"."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{max(seconds, 0)} s"
    minutes = seconds // 60
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "min")]
    if days:
        parts = parts[:2]  # a day and more: to the hour
    return " ".join(f"{n} {unit}" for n, unit in parts if n) or "0 min"


__all__ = ["attempt_words", "duration_words", "permission_words", "scope_words"]

"""The role x permission matrix, in the shape of the product page's table (seed 001).

Cells: ✅ the role grants it; ➖ it does not (or denies it); otherwise the condition
under which a holder of the role gets it:

* ``If enabled in user settings`` - the role lists it under ``if_setting``: a holder gets it
  where they also have that setting switched on (the setting's name is the cell's ``detail``);
* ``If assigned to them`` - the role lists it under ``on_assigned``: a holder gets it on the objects an app
  assigned to them (``detail``: ``on_assigned.<type>``);
* ``If added to a task`` (``If added to <type>``) - routes needing it take an
  ``object: task:{...}``, so an object grant gives it;
* ``If added to <scope type>`` - a role that directly inherits this one adds it, no
  config binding names that role (the admin API binds it when someone is "added to"
  a scope), and every route needing the permission takes its scope from that one
  type: e.g. ``client_admin`` (inherits ``admin``, adds ``client_dashboards:view``,
  whose route has ``scope: client:{client}``).
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rolegate.authz.compiler import compile_policy
from rolegate.authz.policy import Policy

__all__ = ["Cell", "Matrix", "build_matrix", "render"]

ALLOW = "✅"
NONE = "➖"


SETTING = "If enabled in user settings"
ASSIGNED = "If assigned to them"


@dataclass(frozen=True, slots=True)
class Cell:
    kind: str  # "allow", "none", "denied", "conditional"
    text: str  # the seed table's wording
    detail: str = ""  # for a conditional cell: which user setting(s) meet it

    @property
    def title(self) -> str:
        return f"{self.text} ({self.detail})" if self.detail else self.text


@dataclass(frozen=True, slots=True)
class Matrix:
    permissions: tuple[str, ...]
    roles: tuple[str, ...]
    cells: dict[tuple[str, str], Cell]
    notes: tuple[str, ...] = ()

    def cell(self, permission: str, role: str) -> Cell:
        return self.cells[(permission, role)]

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for p in self.permissions:
            row: dict[str, Any] = {"permission": p, "cells": {r: self.cells[(p, r)].text for r in self.roles}}
            settings = {r: self.cells[(p, r)].detail for r in self.roles if self.cells[(p, r)].detail}
            if settings:
                row["settings"] = settings
            rows.append(row)
        return {"roles": list(self.roles), "notes": list(self.notes), "rows": rows}


def _template_type(template: str | None) -> str | None:
    return template.split(":", 1)[0] if template and ":" in template else None


def _article(word: str) -> str:
    return f"an {word}" if word[:1].lower() in "aeiou" else f"a {word}"


def build_matrix(
    config: Any, roles: Sequence[str] | None = None, scope: str | None = None, policy: Policy | None = None
) -> Matrix:
    """Build the matrix for ``roles`` (default: every role, config order).

    With ``scope``, only roles that some config binding gives at that scope (globally, at
    it or at a parent) are shown.
    """
    policy = policy or compile_policy(config)
    notes: list[str] = []
    names = list(roles) if roles else list(policy.roles)
    unknown = [r for r in names if r not in policy.roles]
    if unknown:
        raise ValueError(f"unknown roles: {', '.join(unknown)}")
    if scope is not None:
        chain = set(policy.scopes.chain(scope)) | {None}
        bound = {b.role.name for b in policy.bindings if b.scope in chain}
        names = [r for r in names if r in bound]
        notes.append(f"roles bound at {scope} (globally, at it or at a parent scope)")

    object_types: dict[str, list[str]] = {}
    scope_types: dict[str, set[str]] = {}
    for route in getattr(config, "routes", ()):
        if route.permission is None:
            continue
        t = _template_type(route.object)
        if t is not None and t not in object_types.setdefault(route.permission, []):
            object_types[route.permission].append(t)
        st = _template_type(route.scope)
        if st is not None:
            scope_types.setdefault(route.permission, set()).add(st)
    bound_types: dict[str, set[str | None]] = {}
    for b in policy.bindings:
        bound_types.setdefault(b.role.name, set()).add(b.scope.split(":", 1)[0] if b.scope else None)
    config_roles = getattr(config, "roles", {})

    def extension_condition(role: str, perm: str) -> str | None:
        # An "added to <type>" role: directly inherits ``role``, adds ``perm``, is bound by no config
        # binding (the admin API binds it when someone is added to a client), and every route
        # needing ``perm`` takes its scope from one scope type.
        route_types = scope_types.get(perm, set())
        if len(route_types) != 1:
            return None
        for name, flat in policy.roles.items():
            spec = config_roles.get(name)
            if spec is None or role not in spec.inherits or perm not in flat.allow or name in bound_types:
                continue
            return f"If added to {next(iter(route_types))}"
        return None

    cells: dict[tuple[str, str], Cell] = {}
    for perm in policy.catalogue_order:
        for role in names:
            flat = policy.roles[role]
            if perm in flat.allow:
                cells[(perm, role)] = Cell("allow", ALLOW)
                continue
            if perm in flat.deny:
                cells[(perm, role)] = Cell("denied", NONE)
                continue
            conditions = []
            settings = [name for name, perms in flat.conditional.items() if perm in perms]
            if settings:
                conditions.append(SETTING)
            assigned = [t for t, perms in flat.on_assigned.items() if perm in perms]
            if assigned:  # on_assigned: on objects an app assigned to the holder (or the scope one lies in)
                conditions.append(ASSIGNED)
                settings += [f"on_assigned.{t}" for t in assigned]
            for t in object_types.get(perm, ()):
                conditions.append(f"If added to {_article(t)}")
            extension = extension_condition(role, perm)
            if extension is not None:
                conditions.append(extension)
            cells[(perm, role)] = (
                Cell("conditional", "; ".join(conditions), ", ".join(settings)) if conditions else Cell("none", NONE)
            )
    return Matrix(policy.catalogue_order, tuple(names), cells, tuple(notes))


def render(matrix: Matrix, fmt: str = "md") -> str:
    """``md`` (the seed's table shape), ``csv`` or a self-contained ``html`` page."""
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["permission", *matrix.roles])
        for p in matrix.permissions:
            writer.writerow([p, *(matrix.cells[(p, r)].text for r in matrix.roles)])
        return out.getvalue()
    if fmt == "html":
        return _html(matrix)
    if fmt != "md":
        raise ValueError(f"unknown format {fmt!r}")

    def md(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [f"| Permission | {' | '.join(md(r) for r in matrix.roles)} |", f"|---|{'---|' * len(matrix.roles)}"]
    for p in matrix.permissions:
        lines.append(f"| {md(p)} | {' | '.join(md(matrix.cells[(p, r)].text) for r in matrix.roles)} |")
    return "\n".join(lines) + "\n"


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}"
    "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.35rem .6rem;text-align:center}"
    "th:first-child,td:first-child{text-align:left;font-family:monospace}"
    "thead th{background:#f3f3f3}td.conditional{background:#fff8e1;font-size:.9em}"
    "td.allow{background:#eef9ee}"
)


def _html(matrix: Matrix) -> str:
    e = html.escape
    head = "".join(f'<th scope="col">{e(r)}</th>' for r in matrix.roles)
    rows = []
    for p in matrix.permissions:
        cells = "".join(
            f'<td class="{e(matrix.cells[(p, r)].kind)}" title="{e(matrix.cells[(p, r)].title)}">'
            f"{e(matrix.cells[(p, r)].text)}</td>"
            for r in matrix.roles
        )
        rows.append(f'<tr><th scope="row">{e(p)}</th>{cells}</tr>')
    notes = "".join(f"<p>{e(n)}</p>" for n in matrix.notes)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>Permissions by role</title>"
        f"<style>{_CSS}</style></head><body><h1>Permissions by role</h1>{notes}"
        f'<table><thead><tr><th scope="col">Permission</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></body></html>\n"
    )

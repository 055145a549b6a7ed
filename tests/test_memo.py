"""The one bounded cache (rolegate.memo.BoundedCache) and the rule that nothing remembers in module globals.

Issue #20: remembering is owned by an object (the Runtime, or something it owns, so a reload drops it), every
cache is a BoundedCache with its limit in rolegate.limits, and no module-level mutable dict/list/set is left on
the request path. ``test_no_module_level_mutable_state`` scans src/rolegate with ``ast`` for it (ROLEGATE_SCAN_SRC
names another tree to scan: how it was shown to catch ``_LINKS`` on the code before).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

from rolegate import limits
from rolegate.memo import BoundedCache

SRC = Path(os.environ.get("ROLEGATE_SCAN_SRC") or Path(__file__).resolve().parents[1] / "src" / "rolegate")


# -- the helper --------------------------------------------------------------------------------------------------


def test_bound_holds() -> None:
    cache: BoundedCache[int, str] = BoundedCache(4)
    for i in range(100):
        assert cache.put(i, str(i)) == str(i)
        assert len(cache) <= 4
        assert cache[i] == str(i)  # the entry just put is always there


def test_full_cache_is_emptied_then_keeps_the_new_entry() -> None:
    cache: BoundedCache[str, int] = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("c", 3)  # full: emptied first
    assert dict(cache) == {"c": 3}
    assert cache.get("a") is None and "b" not in cache


def test_get_after_clear() -> None:
    cache: BoundedCache[str, int] = BoundedCache(8)
    cache.put("a", 1)
    cache.clear()  # an owner's invalidation (policy, version or generation change)
    assert cache.get("a") is None and cache.get("a", 0) == 0
    assert cache.put("a", 2) == 2 and cache["a"] == 2
    assert cache.limit == 8


def test_hit_is_plain_dict_get() -> None:
    """The hot path: a hit is the C dict's own get/[]/in, with no Python call and no per-instance __dict__."""
    assert issubclass(BoundedCache, dict)
    for name in ("get", "__getitem__", "__contains__", "__setitem__", "pop", "clear"):
        assert getattr(BoundedCache, name) is getattr(dict, name), name
    assert not hasattr(BoundedCache(1), "__dict__")


def test_limits_are_positive_ints() -> None:
    for name in limits.__all__:
        value = getattr(limits, name)
        assert isinstance(value, int) and value > 0, name


# -- no module-level mutable state -------------------------------------------------------------------------------

_MUTABLE_CALLS = {
    "dict",
    "set",
    "list",
    "OrderedDict",
    "defaultdict",
    "deque",
    "WeakKeyDictionary",
    "WeakValueDictionary",
    "WeakSet",
}
_MUTABLE_LITERALS = (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)

# Constant tables: built once at import and never written to (a lookup table, default headers, a unit map).
CONSTANT_TABLES: dict[tuple[str, str], str] = {
    ("admin/api.py", "SECURITY_HEADERS"): "response headers, read only",
    ("admin/openapi.py", "_ERRORS"): "error descriptions for the OpenAPI document",
    ("admin/requests_ui.py", "_STATUS"): "status words",
    ("admin/ui.py", "HEADERS"): "response headers, read only",
    ("audit/query.py", "_UNITS"): "duration units",
    ("cli/__init__.py", "COMMANDS"): "command name -> module",
    ("config/sections/features.py", "_RATE_UNITS"): "rate units",
    ("config/sections/identity.py", "_SAFE_ALGS"): "allowed JWT algorithms",
    ("config/types.py", "_DURATION_UNITS"): "duration units",
    ("config/types.py", "_SIZE_UNITS"): "size units",
    ("directory/presets.py", "_UID_MEMBER_ATTRIBUTES"): "LDAP attribute names",
    ("identity/daypass/pages.py", "SECURITY_HEADERS"): "response headers, read only",
    ("identity/daypass/pages.py", "_ENDED"): "ended-pass wording",
    ("identity/daypass/pages.py", "_STATUS"): "ended kind -> HTTP status",
    ("identity/forward_auth.py", "_NOBODY"): "the empty identity headers",
    ("identity/forward_auth.py", "CONVENTIONS"): "front proxy conventions by name",
    ("identity/origin.py", "_DEFAULT_PORTS"): "scheme -> default port",
    ("proxy/forward.py", "_EMPTY"): "the empty header mapping (typed Mapping: read only)",
    ("proxy/paths.py", "_HEX_BYTE"): "byte -> %XX table",
    ("proxy/paths.py", "_ESCAPED_ASCII"): "ASCII escaping table",
    ("proxy/routes.py", "_NO_METHODS"): "the empty method table (never written to)",
    ("proxy/websocket.py", "_NOT_SENDABLE"): "close codes a peer may not send",
    ("server/access.py", "_NO_HEADERS"): "the empty header dict (never written to)",
    ("server/access.py", "_DECISIONS"): "(decision, mode) -> its buffered Prometheus counter, made at import",
    ("server/access.py", "_ALLOWED"): "mode -> the allow counter, made at import",
    ("store/postgres.py", "_LEASE_SESSION"): "libpq keepalive settings",
    ("tokens/endpoint.py", "_NO_STORE"): "response headers, read only",
    ("tokens/endpoint.py", "_REFUSED"): "grant -> its refusal",
    ("web/responses.py", "_TITLES"): "status -> title",
}

# Registries filled while modules import, read afterwards; and mutable globals outside this change's files,
# named so that none is added unnoticed (move each to an owner, then drop it here: the test insists they exist).
KNOWN_GLOBALS: dict[tuple[str, str], str] = {
    ("identity/registry.py", "_REGISTRY"): "authenticator classes, registered at import",
    ("server/metrics.py", "_BUFFERED"): "buffered counters, registered when made (at import)",
    (
        "admin/request_notify.py",
        "_senders",
    ): "access-request notices' transports for the current notify config (off the request path)",
    ("directory/departures.py", "_warned"): "each fallback explained once per process (a log de-duplicator)",
    (
        "server/audit_health.py",
        "_live",
    ): "this process's audit logs, summed into its Prometheus gauges (metrics are per process)",
    (
        "server/audit_health.py",
        "_shown",
    ): "the unwritable-target labels this process last published (per process, as its gauges)",
}


def _is_mutable(value: ast.expr | None) -> bool:
    if isinstance(value, _MUTABLE_LITERALS):
        return True
    if isinstance(value, ast.Call):
        func = value.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        return name in _MUTABLE_CALLS
    return False


def module_level_mutables(src: Path) -> list[tuple[str, int, str]]:
    """(file, line, name) of every module-level assignment of a mutable dict/list/set under ``src``."""
    found = []
    for path in sorted(src.rglob("*.py")):
        module = path.relative_to(src).as_posix()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign):
                targets, value = [node.target], node.value
            else:
                continue
            if not _is_mutable(value):
                continue
            for target in targets:
                if isinstance(target, ast.Name) and target.id != "__all__":
                    found.append((module, node.lineno, target.id))
    return found


def test_no_module_level_mutable_state() -> None:
    allowed = CONSTANT_TABLES.keys() | KNOWN_GLOBALS.keys()
    found = module_level_mutables(SRC)
    offenders = [
        f"src/rolegate/{module}:{line}: {name}" for module, line, name in found if (module, name) not in allowed
    ]
    assert not offenders, (
        "module-level mutable state (give it an owner, e.g. the Runtime, and a BoundedCache; "
        "or allowlist a never-written constant table by name with its reason):\n" + "\n".join(offenders)
    )
    gone = allowed - {(module, name) for module, _line, name in found}
    assert not gone, f"allowlisted but no longer there (drop them from the lists): {sorted(gone)}"


def test_scan_catches_a_module_level_cache(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "links.py").write_text(
        "from typing import Any\n\n_LINKS: dict[tuple[str, str], Any] = {}\n_SEEN = set()\nLIMIT = 3\n"
        "__all__ = ['LIMIT']\n"
    )
    assert module_level_mutables(tmp_path) == [("pkg/links.py", 3, "_LINKS"), ("pkg/links.py", 4, "_SEEN")]

"""Which rolegate package may import which: a new import cycle between packages fails here, by name.

Every module under src/rolegate is parsed with ``ast``; every ``import``/``from ... import`` of rolegate is read,
at module level and inside functions alike (a lazy import still ties the packages together). Imports under
``if TYPE_CHECKING:`` are left out: they are annotations only and never run.

A package is the first name under ``rolegate`` (``rolegate.server.access`` is ``server``); the top-level modules
(``errors``, ``limits``, ``memo``, ``display_time``, ``app``) are their own layer, and ``from rolegate import __version__``
is the ``rolegate`` package itself. The direction, lowest first: web/errors/config ... identity, tokens, admin,
server, app, cli.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "rolegate"

# What each package may import at run time (what is true today; widen only with a reason, never upwards).
ALLOWED: dict[str, frozenset[str]] = {
    k: frozenset(v)
    for k, v in {
        "rolegate": set(),
        "errors": set(),
        "limits": set(),
        # memo.BoundedCache, the one bounded cache every package's remembering uses (no rolegate imports).
        "memo": set(),
        "display_time": set(),
        # HTTP glue shared by every stage: error pages/JSON, printable/loggable paths, the rate-limited malformed log.
        "web": {"errors"},
        "config": {"errors"},
        "store": set(),
        "authz": {"config", "limits", "memo"},
        "notify": {"config"},
        "proxy": {"config", "errors", "limits", "memo"},
        "audit": {"errors", "store"},
        "directory": {"config", "errors", "limits", "memo", "store"},
        # Sign-in, sessions, forward-auth, day passes: never server or admin (the server hands check_access in).
        "identity": {"audit", "authz", "config", "display_time", "errors", "limits", "memo", "proxy", "store", "web"},
        "tokens": {"audit", "errors", "identity", "limits", "memo", "store"},
        "admin": {"audit", "authz", "config", "display_time", "errors", "identity", "notify", "proxy", "store", "web"},
        "server": {
            "audit",
            "authz",
            "config",
            "directory",
            "errors",
            "identity",
            "limits",
            "memo",
            "proxy",
            "store",
            "tokens",
            "web",
        },
        # The composition root: wires the stages into one aiohttp application.
        "app": {"admin", "errors", "identity", "proxy", "server", "tokens", "web"},
        "cli": {
            "rolegate",
            "admin",
            "audit",
            "authz",
            "config",
            "directory",
            "errors",
            "identity",
            "proxy",
            "server",
            "store",
            "tokens",
        },
        "__main__": {"cli"},
    }.items()
}

# Edges against the direction, known and named; each must stay a function-level (lazy) import, so that no
# import-time cycle exists, and each must still be there (drop it here once it is gone).
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("server", "admin"): "server/refused.py: the 403 page words the attempt (admin.wording.attempt_words) and "
    "offers whom to ask (admin.requests.approvers_for, which needs the admin's store "
    "queries); moving them below server is not a small change",
    ("server", "app"): "server/worker.py builds the application (rolegate.app, the composition root) in the "
    "started worker",
    ("audit", "server"): "audit/log.py AuditLog.from_config publishes queue/sink health to "
    "server.audit_health (Prometheus and /readyz) for what serve builds",
}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "rolegate"


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join(parts), is_package


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Imports(ast.NodeVisitor):
    """(imported module, line, inside a function?) for every rolegate import that runs."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.module, self.is_package = module, is_package
        self.found: list[tuple[str, int, bool]] = []
        self._depth = 0

    def _function(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name == "rolegate" or alias.name.startswith("rolegate."):
                self.found.append((alias.name, node.lineno, self._depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.module.split(".") if self.is_package else self.module.split(".")[:-1]
            base = base[: len(base) - node.level + 1]
            name = ".".join(base + ([node.module] if node.module else []))
        else:
            name = node.module or ""
        if name == "rolegate":  # from rolegate import errors / __version__
            for alias in node.names:
                sub = alias.name if (SRC / alias.name).is_dir() or (SRC / f"{alias.name}.py").exists() else ""
                self.found.append((f"rolegate.{sub}" if sub else "rolegate", node.lineno, self._depth > 0))
        elif name.startswith("rolegate."):
            self.found.append((name, node.lineno, self._depth > 0))


def _edges() -> dict[tuple[str, str], list[tuple[str, bool]]]:
    """(importer package, imported package) -> [("module:line", lazy?)] across src/rolegate."""
    edges: dict[tuple[str, str], list[tuple[str, bool]]] = defaultdict(list)
    for path in sorted(SRC.rglob("*.py")):
        module, is_package = _module_name(path)
        visitor = _Imports(module, is_package)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        for imported, line, lazy in visitor.found:
            source, target = _package(module), _package(imported)
            if source != target:
                edges[(source, target)].append((f"{module}:{line}", lazy))
    return edges


def test_the_scan_sees_module_level_and_function_level_imports():
    """The scanner itself: the test below would pass vacuously if it read nothing."""
    edges = _edges()
    assert any(not lazy for where in edges.values() for _, lazy in where)
    assert any(lazy for where in edges.values() for _, lazy in where)
    assert ("server", "identity") in edges and ("app", "server") in edges


def test_every_package_has_a_place_in_the_layers():
    packages = {_package(_module_name(p)[0]) for p in SRC.rglob("*.py")}
    assert packages - ALLOWED.keys() == set(), "a new package: give it a row in ALLOWED"


def test_the_allowed_table_has_no_cycle():
    seen: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(ALLOWED.get(node, ())):
            assert seen.get(nxt) != 1, f"ALLOWED has a cycle: {' -> '.join(path + [nxt])}"
            if nxt not in seen:
                visit(nxt, path + [nxt])
        seen[node] = 2

    for package in sorted(ALLOWED):
        if package not in seen:
            visit(package, [package])


def test_packages_import_only_downwards():
    edges = _edges()
    wrong = [
        f"{a} -> {b}: {', '.join(w for w, _ in where)}"
        for (a, b), where in sorted(edges.items())
        if b not in ALLOWED.get(a, frozenset()) and (a, b) not in KNOWN_EXCEPTIONS
    ]
    assert wrong == [], "imports against the layers (tests/test_layers.py ALLOWED):\n" + "\n".join(wrong)


def test_identity_does_not_import_server_or_admin():
    """The named case of issue #20: identity <-> server was a package cycle."""
    edges = _edges()
    found = [w for target in ("server", "admin") for w, _ in edges.get(("identity", target), [])]
    assert found == [], f"identity imports server/admin: {found}"


def test_known_exceptions_are_lazy_and_still_exist():
    edges = _edges()
    for edge, why in KNOWN_EXCEPTIONS.items():
        assert edge in edges, f"{edge} is gone: remove it from KNOWN_EXCEPTIONS ({why})"
        eager = [w for w, lazy in edges[edge] if not lazy]
        assert eager == [], f"{edge} imported at module level ({eager}): an import-time cycle"


if __name__ == "__main__":  # the package graph as it is: python tests/test_layers.py
    graph: dict[str, set[str]] = defaultdict(set)
    for source, target in _edges():
        graph[source].add(target + ("*" if (source, target) in KNOWN_EXCEPTIONS else ""))
    for source in sorted(graph):
        print(f"{source} -> {', '.join(sorted(graph[source]))}")
    print("(* a known exception, imported lazily: KNOWN_EXCEPTIONS)")

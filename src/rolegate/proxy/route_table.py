"""Build the compiled route table from config (the glue between ``config`` and ``routes``)."""

from __future__ import annotations

from rolegate.config import Config
from rolegate.errors import ConfigError
from rolegate.proxy.routes import RouteSpec, RouteTable


def route_specs(config: Config) -> list[RouteSpec]:
    """One RouteSpec per configured route, each knowing its file and line."""
    source = getattr(config, "source", None)
    specs = []
    for index, route in enumerate(config.routes):
        where = None
        if source is not None:
            line = source.line_of(("routes", index))
            where = f"{source.file}:{line}" if line else source.file
        specs.append(
            RouteSpec(
                path=route.path,
                methods=frozenset(route.methods) if route.methods else None,
                host=route.host,
                upstream=route.upstream,
                mode=route.mode,
                permission=route.permission,
                scope=route.scope,
                object=route.object,
                redact=route.redact,
                lists=route.lists,
                name=route.name or "",
                index=index,
                source=where,
            )
        )
    return specs


def compile_routes(config: Config) -> tuple[RouteTable, list[str]]:
    """The compiled table and the problems ``rolegate check`` reports (ambiguous or dead routes).

    Raises ConfigError for routes that cannot compile at all.
    """
    table = RouteTable.compile(route_specs(config))
    return table, table.problems()


def compile_routes_strict(config: Config) -> RouteTable:
    """The compiled table, refusing a config whose routes are ambiguous or unreachable."""
    table, problems = compile_routes(config)
    if problems:
        raise ConfigError(problems)
    return table

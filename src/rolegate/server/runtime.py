"""Everything one worker needs to answer requests, built from one config and swapped whole on reload."""

from __future__ import annotations

import logging
from pathlib import Path

from rolegate.config import Config
from rolegate.identity.stage import IdentityStage  # identity stage (issue 3)
from rolegate.proxy.forward import Forwarder
from rolegate.proxy.route_table import compile_routes_strict
from rolegate.proxy.routes import RouteTable
from rolegate.proxy.upstream_pool import Upstream

log = logging.getLogger("rolegate.runtime")


class Runtime:
    """The compiled, immutable view of a config for the request path (plus its live resources)."""

    __slots__ = ("config", "routes", "forwarder", "generation", "max_header_size", "identity")

    def __init__(self, config: Config, routes: RouteTable, forwarder: Forwarder, generation: int,
                 identity: IdentityStage | None = None) -> None:
        self.config = config
        # Sessions, bearer tokens and sign-in; None when neither oidc nor session is configured.
        self.identity = identity
        self.routes = routes
        self.forwarder = forwarder
        self.generation = generation
        self.max_header_size = config.server.max_header_size

    @classmethod
    def build(cls, config: Config, generation: int = 1, *, base_dir: Path | None = None) -> "Runtime":
        """Compile everything that can fail before anything is swapped in (raises ConfigError)."""
        routes = compile_routes_strict(config)
        upstreams = {
            name: Upstream(name, up.url, connect_timeout=up.connect_timeout.total_seconds(),
                           read_timeout=up.timeout.total_seconds(), pool_size=up.pool_size)
            for name, up in config.upstreams.items()
        }
        forwarder = Forwarder(upstreams, max_body=config.server.max_body,
                              trusted_proxies=config.server.trusted_proxies)
        identity = IdentityStage(config, base_dir=base_dir) if (config.oidc or config.session) else None
        return cls(config, routes, forwarder, generation, identity)

    async def close(self) -> None:
        await self.forwarder.close()
        if self.identity is not None:
            await self.identity.close()


class RuntimeHolder:
    """Holds the current Runtime; a reload swaps it between two requests, never during one."""

    __slots__ = ("runtime", "config_path", "base_dir")

    def __init__(self, runtime: Runtime, config_path: str | None = None) -> None:
        self.runtime = runtime
        self.config_path = config_path
        self.base_dir = Path(config_path).resolve().parent if config_path else Path.cwd()

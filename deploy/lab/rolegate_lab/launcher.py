"""Start lab components in their own work dirs and stop them all together (pytest fixtures use it)."""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .backend import Backend
from .idp import IdP
from .process import LabProcess
from .slapd import Slapd


class Launcher:
    """Owns every component it started under ``base_dir``; ``close()`` stops them in reverse order."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = Path(base_dir)
        self._started: list[LabProcess] = []
        self._counter = itertools.count(1)

    def _dir(self, kind: str) -> Path:
        return self.base_dir / f"{kind}-{next(self._counter)}"

    def _run(self, component: LabProcess) -> Any:
        self._started.append(component)
        return component.start()

    def slapd(self, **kwargs: Any) -> Slapd:
        """A started private slapd (seeded unless ``seed=False``)."""
        return self._run(Slapd(self._dir("slapd"), **kwargs))

    def backend(self, **kwargs: Any) -> Backend:
        """A started example backend."""
        return self._run(Backend(self._dir("backend"), **kwargs))

    def idp(self, clients: Iterable[Mapping[str, Any]], *, slapd: Slapd, **kwargs: Any) -> IdP:
        """A started lab IdP authenticating against ``slapd`` with these clients."""
        return self._run(IdP(self._dir("idp"), ldap_url=slapd.url, ldap_base_dn=slapd.base_dn,
                             clients=clients, **kwargs))

    def close(self) -> None:
        while self._started:
            self._started.pop().stop()

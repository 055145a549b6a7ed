"""Shared fixtures: the lab's real slapd, IdP and example backend (logic lives in deploy/lab/rolegate_lab)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

LAB_DIR = Path(__file__).resolve().parent.parent / "deploy" / "lab"
if str(LAB_DIR) not in sys.path:
    sys.path.insert(0, str(LAB_DIR))

from rolegate_lab import Backend, IdP, Launcher, Slapd, free_port, rolegate_client  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    if str(LAB_DIR) not in sys.path:
        sys.path.insert(0, str(LAB_DIR))


@pytest.fixture(scope="session")
def lab_launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """Components that live for the whole session."""
    launcher = Launcher(tmp_path_factory.mktemp("lab"))
    yield launcher
    launcher.close()


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    """Components that live for one test."""
    launcher = Launcher(tmp_path / "lab")
    yield launcher
    launcher.close()


@pytest.fixture(scope="session")
def lab_slapd(lab_launcher: Launcher) -> Slapd:
    """The seeded company directory, shared: tests must not modify it (use fresh_slapd)."""
    return lab_launcher.slapd()


@pytest.fixture
def fresh_slapd(launcher: Launcher) -> Slapd:
    """A seeded slapd of this test's own, to modify, kill or restart."""
    return launcher.slapd()


@pytest.fixture
def make_slapd(launcher: Launcher) -> Callable[..., Slapd]:
    """Factory: ``make_slapd(seed=False, extra_schemas=[...])``; stopped after the test."""
    return launcher.slapd


@pytest.fixture(scope="session")
def lab_backend(lab_launcher: Launcher) -> Backend:
    """The example backend, shared."""
    return lab_launcher.backend()


@pytest.fixture(scope="session")
def rolegate_port() -> int:
    """A port reserved up front for the session's rolegate, so the IdP can know its callback."""
    return free_port()


@pytest.fixture(scope="session")
def rolegate_url(rolegate_port: int) -> str:
    return f"http://127.0.0.1:{rolegate_port}"


@pytest.fixture(scope="session")
def lab_idp(lab_launcher: Launcher, lab_slapd: Slapd, rolegate_url: str) -> IdP:
    """The company IdP with client ``rolegate`` registered for ``rolegate_url``
    (secret: ``lab_idp.client()["client_secret"]``)."""
    return lab_launcher.idp([rolegate_client(rolegate_url)], slapd=lab_slapd)


@pytest.fixture
def make_idp(launcher: Launcher, lab_slapd: Slapd) -> Callable[..., IdP]:
    """Factory: ``make_idp([rolegate_client(url), ...], **IdP options)`` against lab_slapd; stopped after the test."""
    return functools.partial(launcher.idp, slapd=lab_slapd)


@pytest.fixture(scope="session")
def make_session_idp(lab_launcher: Launcher, lab_slapd: Slapd) -> Callable[..., IdP]:
    """Like make_idp, for session-scoped fixtures; stopped at the end of the session."""
    return functools.partial(lab_launcher.idp, slapd=lab_slapd)

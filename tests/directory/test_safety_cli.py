"""The deletion guard, end to end: the service refuses, ``rolegate sync`` exits non-zero, --force applies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rolegate.directory import DirectorySync, load_snapshot
from rolegate.directory.persist import COUNTER

from .conftest import GROUPS, PEOPLE, user_dn

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable  # the interpreter running the tests (a scratch copy of the tree has no .venv)


async def test_service_refuses_then_force_applies(fresh_slapd, config_for, store, audit) -> None:
    sync = DirectorySync(config_for(fresh_slapd), store, audit=audit)
    assert (await sync.sync_now(full=True)).ok
    before = await store.counter(COUNTER)
    for name in ("frank", "grace", "judy"):  # 3 of 15 users: more than 10%
        fresh_slapd.ldapdelete(user_dn(name))

    refused = await sync.sync_now(full=True)
    assert refused.refused and not refused.applied and refused.pending_deletions == 3
    assert sync.status.state == "refused" and sync.status.pending_deletions == 3
    assert sync.snapshot.user("frank") is not None  # still serving the last good snapshot
    assert await store.counter(COUNTER) == before
    assert (await load_snapshot(store)).user("frank") is not None

    dry = await sync.sync_now(full=True, force=True, dry_run=True)
    assert dry.ok and not dry.applied and sync.snapshot.user("frank") is not None

    forced = await sync.sync_now(full=True, force=True)
    assert forced.applied and sync.status.state == "ok" and sync.status.pending_deletions == 0
    assert sync.snapshot.user("frank") is None
    assert await store.counter(COUNTER) == before + 1
    assert audit.events[-1][1]["forced"] is True


async def test_a_broken_filter_is_refused(fresh_slapd, config_for, store) -> None:
    sync = DirectorySync(config_for(fresh_slapd), store)
    assert (await sync.sync_now(full=True)).ok
    typo = DirectorySync(config_for(fresh_slapd, users={"filter": "(objectClass=inetOrgPersn)"}), store)
    result = await typo.sync_now(full=True)
    assert result.refused and result.pending_deletions == 15
    assert (await load_snapshot(store)).user("bob") is not None


def _config(tmp_path: Path, slapd) -> Path:
    path = tmp_path / "rolegate.yaml"
    path.write_text(f"""
server: {{listen: "127.0.0.1:0", public_url: "http://127.0.0.1"}}
storage: {{url: "sqlite:///{tmp_path / "state.db"}"}}
directory:
  url: {slapd.url}
  bind_dn: {slapd.service_dn}
  bind_password: ${{LAB_LDAP_PASSWORD}}
  users: {{base: "{PEOPLE}", disabled_filter: "(employeeType=disabled)"}}
  groups: {{base: "{GROUPS}"}}
  max_deletions: 10%
upstreams: {{app: {{url: "http://127.0.0.1:9"}}}}
routes: [{{path: "/**", mode: public, upstream: app}}]
""")
    return path


def _cli(config: Path, *args: str, password: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LAB_LDAP_PASSWORD": password, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [PYTHON, "-m", "rolegate", "sync", "-c", str(config), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_cli_sync_refuses_and_force_applies(fresh_slapd, tmp_path: Path) -> None:
    config = _config(tmp_path, fresh_slapd)
    password = fresh_slapd.service_password
    first = _cli(config, password=password)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "users added 15" in first.stdout and "applied" in first.stdout

    for name in ("frank", "grace", "judy"):
        fresh_slapd.ldapdelete(user_dn(name))
    dry = _cli(config, "--dry-run", password=password)
    assert dry.returncode == 5 and "REFUSED" in dry.stdout
    refused = _cli(config, "--json", password=password)
    assert refused.returncode == 5
    body = json.loads(refused.stdout)
    assert body["refused"] and body["pending_deletions"] == 3 and not body["applied"]
    assert sorted(u["username"] for u in body["diff"]["users_removed"]) == ["frank", "grace", "judy"]

    forced = _cli(config, "--force", password=password)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "users removed (3)" in forced.stdout and "forced" in forced.stdout
    again = _cli(config, password=password)
    assert again.returncode == 0 and "changes: none" in again.stdout

    wrong = _cli(config, password="not-the-password")
    assert wrong.returncode == 4 and "FAILED" in wrong.stdout
    for output in (first, refused, forced, wrong):
        assert password not in output.stdout + output.stderr and "not-the-password" not in wrong.stderr


def test_cli_reports_an_unreachable_directory(tmp_path: Path) -> None:
    class Nowhere:
        url = "ldap://127.0.0.1:9"
        service_dn = "cn=x,dc=example,dc=com"

    result = _cli(_config(tmp_path, Nowhere), password="x")
    assert result.returncode == 4 and "FAILED" in result.stdout and "nothing was applied" in result.stdout

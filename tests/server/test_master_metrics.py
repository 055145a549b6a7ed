"""The master's own Prometheus values reach the internal listener's ``/metrics``.

``/metrics`` reads the per-process files of the instance's runtime directory, and prometheus-client picks
between those files and plain memory once, when it is first imported. The directory sync runs in the master,
so its gauges (``rolegate_directory_users``, ``rolegate_directory_refused_deletions``, and the master's share
of ``rolegate_audit_unwritable``) are in ``/metrics`` only when the master imported prometheus-client after
``PROMETHEUS_MULTIPROC_DIR`` was set: imported before, they stayed in the master's memory and never appeared.
"""

from __future__ import annotations

import json
import time
import urllib.request

import ldap3
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.serve import RolegateProcess

pytestmark = pytest.mark.lab

FIRST_SYNC_WITHIN = 30.0


def directory_users(slapd) -> int:
    """The people the directory holds, asked of slapd itself (the sync's users base and preset filter)."""
    conn = ldap3.Connection(ldap3.Server(slapd.url), slapd.service_dn, slapd.service_password, auto_bind=True)
    try:
        conn.search(f"ou=people,{slapd.base_dn}", "(objectClass=inetOrgPerson)", attributes=[])
        return len(conn.entries)
    finally:
        conn.unbind()


def scrape(served: RolegateProcess) -> dict[str, list]:
    with urllib.request.urlopen(served.internal_url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def test_the_masters_directory_gauges_are_in_the_metrics(tmp_path, lab_slapd, lab_backend) -> None:
    expected = directory_users(lab_slapd)
    assert expected > 0
    config = {
        "server": {
            "listen": "127.0.0.1:0",
            "public_url": "http://127.0.0.1:8080",
            "internal_listen": "127.0.0.1:0",
            "workers": 2,
        },
        "storage": {"url": f"sqlite:///{tmp_path}/rolegate.db"},
        "directory": {
            "url": lab_slapd.url,
            "bind_dn": lab_slapd.service_dn,
            "bind_password": lab_slapd.service_password,
            "users": {"base": f"ou=people,{lab_slapd.base_dn}"},
            "groups": {"base": f"ou=groups,{lab_slapd.base_dn}"},
            "interval": "2s",
            "full_interval": "1h",
        },
        "permissions": ["workorders:view"],
        "upstreams": {"app": {"url": lab_backend.url}},
        "routes": [{"path": "/public/**", "mode": "public", "upstream": "app"}],
    }
    with RolegateProcess(config, tmp_path) as served:
        # The first sync, as /readyz tells it (the master sets the gauges when it answers /readyz).
        deadline = time.monotonic() + FIRST_SYNC_WITHIN
        state: dict = {}
        while not (state.get("state") == "ok" and state.get("users")):
            if time.monotonic() > deadline:
                raise AssertionError(f"no directory sync within {FIRST_SYNC_WITHIN:.0f}s: {state}\n{served.log()}")
            time.sleep(0.2)
            state = json.loads(served.readyz()[1]).get("checks", {}).get("directory", {})
        assert state["users"] == expected, state

        families = scrape(served)
        users = families.get("rolegate_directory_users")
        assert users, (
            "rolegate_directory_users is not in /metrics: the master's value never reached its metrics "
            f"file (prometheus-client imported before PROMETHEUS_MULTIPROC_DIR was set?)\n"
            f"families: {sorted(families)}"
        )
        assert [s.value for s in users] == [expected]
        refused = families.get("rolegate_directory_refused_deletions")
        assert refused and [s.value for s in refused] == [0.0], refused
        # The supervisor's collector (the master's, computed at each scrape) is there too: one slot per worker.
        up = families.get("rolegate_worker_up")
        assert up and sorted(s.labels["worker"] for s in up) == ["0", "1"], up
        assert all(s.value == 1.0 for s in up), up

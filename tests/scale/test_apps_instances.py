"""Apps across instances (issue 19 part 2): an API key made with the CLI works on every instance sharing
PostgreSQL and Redis, and its revocation is refused from the next request on each of them (the ``app_keys``
namespace is read from the database at every request, never from the Redis cache)."""

from __future__ import annotations

import subprocess
import sys

import aiohttp
import pytest

from tests.admin.test_apps import API, APPS_AUDIENCE, _bearer, _idp_clients, _place, apps_config
from tests.support.serve import RolegateProcess

pytestmark = pytest.mark.lab


async def test_an_api_key_revoked_on_one_instance_is_refused_on_all(shared_backend, make_idp, lab_backend, tmp_path):
    idp = make_idp(_idp_clients(), extra_resources=[APPS_AUDIENCE])
    procs = []
    try:
        for i in range(2):
            config = apps_config(idp, lab_backend.url, tmp_path / "unused.db", workers=1)
            config["storage"] = {
                "url": f"{shared_backend.db_url}?application_name=rolegate-i{i}",
                "cache_url": shared_backend.redis_url,
                "cache_prefix": shared_backend.prefix,
            }
            procs.append(RolegateProcess(config, tmp_path / f"i{i}"))
        migrated = subprocess.run(
            [sys.executable, "-m", "rolegate", "migrate", "-c", str(procs[0].config_path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        for proc in procs:
            proc.start()
        made = subprocess.run(
            [
                sys.executable,
                "-m",
                "rolegate",
                "apps",
                "key",
                "create",
                "--app",
                "fieldservice",
                "-c",
                str(procs[0].config_path),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip()
        async with aiohttp.ClientSession() as http:
            for i, proc in enumerate(procs):
                status, body = await _place(http, proc.url, key, f"workorder:{40 + i}", "building:a")
                assert status == 201, (i, body)
            revoked = subprocess.run(
                [sys.executable, "-m", "rolegate", "apps", "key", "revoke", key[4:20], "-c", str(procs[1].config_path)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert revoked.returncode == 0, revoked.stderr
            for i, proc in enumerate(procs):
                async with http.get(f"{proc.url}{API}/roles", headers=_bearer(key)) as r:
                    assert r.status == 401, (i, await r.text())
    finally:
        for proc in procs:
            proc.stop()

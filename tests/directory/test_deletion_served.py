"""Issue 28 through the real server: an account deleted in LDAP is refused within one interval.

`rolegate serve` with the lab's slapd, IdP and backend; the master's sync loop runs as configured
(incremental every second, the next full sync an hour away). The user signs in, works, is deleted
in the directory; the first sync run that begins after the deletion takes the access away, open
session included: before issue 28 it stayed until the full sync.
"""

from __future__ import annotations

import json
import time

import pytest

from rolegate_lab import free_port, rolegate_client
from tests.support.serve import RolegateProcess
from tests.test_directory_effect import config_for, signed_in, status

from .conftest import user_dn

pytestmark = pytest.mark.lab

POLL_BOUND = 0.5  # docs/configuration.md: workers see an applied change within 0.5 s (the Store poll)
MARGIN = 0.3
WAIT = 60.0  # bound on waiting for the first sync, and for the next run after the deletion


def directory_state(proc: RolegateProcess) -> dict:
    return json.loads(proc.readyz()[1]).get("checks", {}).get("directory", {})


def wait_for(proc: RolegateProcess, ready) -> dict:
    deadline = time.monotonic() + WAIT
    while True:
        state = directory_state(proc)
        if ready(state):
            return state
        assert time.monotonic() < deadline, f"directory sync: {state}\n{proc.log()[-3000:]}"
        time.sleep(0.1)


@pytest.mark.parametrize("how", ["accesslog", "id listing"])
async def test_a_deleted_account_is_refused_within_one_interval(tmp_path, launcher, lab_backend, how) -> None:
    slapd = launcher.slapd(accesslog=how == "accesslog")
    url = f"http://127.0.0.1:{free_port()}"
    idp = launcher.idp([rolegate_client(url)], slapd=slapd)
    config = config_for(url, idp, slapd, lab_backend.url, tmp_path)
    config["server"]["workers"] = 1
    config["directory"].update(interval="1s", full_interval="1h")
    # trent also holds the role by name: refint takes a deleted entry out of its groups (a change the
    # old incremental sync did see), so only a user binding shows whether the account itself is gone.
    config["bindings"].append({"user": "trent", "role": "technician"})
    if how == "accesslog":
        config["directory"]["accesslog"] = "cn=accesslog"
    proc = RolegateProcess(config, tmp_path)
    proc.start()
    try:
        wait_for(proc, lambda s: s.get("users"))
        http = await signed_in(proc.url, "trent")  # a technician: staff through the nested group
        try:
            assert (await status(http, proc.url + "/workorders/2"))[0] == 200
            deleted_at = time.time()
            slapd.ldapdelete(user_dn("trent"))
            after = wait_for(proc, lambda s: (s.get("last_success") or 0) > deleted_at)
            assert after["state"] == "ok", after
            time.sleep(POLL_BOUND + MARGIN)
            codes = [(await status(http, proc.url + "/workorders/2"))[0] for _ in range(3)]
            assert codes == [403, 403, 403], f"one interval after the deletion: {codes}"
            code, body = await status(http, proc.url + "/workorders/2")
            assert json.loads(body)["error"] == "account_disabled"
        finally:
            await http.close()
    finally:
        proc.stop()

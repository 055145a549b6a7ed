"""Issue 16, item 5: a directory change applies before the identity is read.

A user disabled in LDAP, or removed from the group that gave the role, must be refused by the first request
after the sync is committed and the Store poll (the documented bound, 0.5 s) has carried it to the worker —
not one request (or one remembered answer) later. One worker, so every request meets the same caches; the
directory sync is run by hand (`rolegate sync`) so the test knows when it was committed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.support.serve import RolegateProcess
from tests.test_directory_effect import config_for, signed_in, status

pytestmark = pytest.mark.lab

# docs/configuration.md: "every worker at the next request", carried by the Store poll of STORE_POLL_SECONDS = 0.5 s.
POLL_BOUND = 0.5
MARGIN = 0.3


@pytest.fixture
def served_one_worker(tmp_path, make_idp, fresh_slapd, lab_backend):
    from rolegate_lab import free_port, rolegate_client

    url = f"http://127.0.0.1:{free_port()}"
    idp = make_idp([rolegate_client(url)], slapd=fresh_slapd)
    config = config_for(url, idp, fresh_slapd, lab_backend.url, tmp_path)
    config["server"]["workers"] = 1
    # The master's own sync runs once at start (full), then not again during the test: the test syncs.
    config["directory"]["interval"] = "1h"
    config["directory"]["full_interval"] = "1h"
    proc = RolegateProcess(config, tmp_path)
    proc.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _, body = proc.readyz()
        if json.loads(body).get("checks", {}).get("directory", {}).get("users"):
            break
        time.sleep(0.2)
    else:
        pytest.fail("the first directory sync never finished")
    yield proc, fresh_slapd
    proc.stop()


def sync_now(proc: RolegateProcess) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rolegate", "sync", "-c", str(proc.config_path), "--force"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


async def warm(http, url: str) -> None:
    """Several allowed requests, so the worker has remembered this caller every way it can."""
    for _ in range(5):
        assert (await status(http, url))[0] == 200


# (who, what they open, the LDIF of the change, the error the refusal names)
CHANGES = {
    "disabled account": (
        "trent",
        "/workorders/2",
        "dn: uid=trent,ou=people,{base}\nchangetype: modify\nreplace: employeeType\nemployeeType: disabled\n",
        "account_disabled",
    ),
    "removed membership": (
        "bob",
        "/workorders/1",
        "dn: cn=technicians,ou=groups,{base}\nchangetype: modify\ndelete: member\nmember: uid=bob,ou=people,{base}\n",
        "forbidden",
    ),
}


def mapped_bases(proc: RolegateProcess) -> list[tuple[str, int]]:
    """The base files the server's workers map (docs/directory.md: A new version costs the workers its delta)."""
    return sorted((p.name, p.stat().st_ino) for p in proc.workdir.rglob("snapshot-base-*.map"))


@pytest.mark.parametrize("change", CHANGES, ids=list(CHANGES))
async def test_the_first_request_after_the_sync_is_refused(served_one_worker, change):
    proc, slapd = served_one_worker
    user, path, ldif, error = CHANGES[change]
    http = await signed_in(proc.url, user)
    url = proc.url + path
    try:
        await warm(http, url)
        bases = mapped_bases(proc)
        assert len(bases) == 1, bases
        slapd.ldapmodify(ldif.format(base=slapd.base_dn))
        sync_now(proc)
        time.sleep(POLL_BOUND + MARGIN)
        answers = [await status(http, url) for _ in range(3)]
        assert [code for code, _ in answers] == [403, 403, 403], f"after the sync and the poll bound: {answers}"
        assert json.loads(answers[0][1])["error"] == error
        # the worker read the change as a top file over the base it had: the base was not built again
        assert mapped_bases(proc) == bases
    finally:
        await http.close()

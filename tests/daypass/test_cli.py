"""``rolegate daypass issue|list|revoke`` as an operator runs them (subprocesses), against the Store a running
rolegate serves from: a pass issued on the command line works through the proxy, and revoking it by its
link ends the holder's session at their next request."""

from __future__ import annotations

import getpass
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daypass.conftest import HTML, JSON, Served, redeem

pytestmark = pytest.mark.lab


def rolegate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rolegate", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


async def test_issue_list_revoke_from_the_command_line(served: Served, tmp_path: Path) -> None:
    config = str(served.tmp / "rolegate.yaml")
    out = tmp_path / "qr"
    done = rolegate(
        "daypass",
        "issue",
        "-c",
        config,
        "--template",
        "subcontractor",
        "--scope",
        "building:a",
        "--name",
        "Piet Bakker",
        "--company",
        "Bakker Dak BV",
        "--reason",
        "roof leak",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    link = re.search(r"Link: (\S+)", done.stdout).group(1)
    pass_id = re.search(r"Day pass ([0-9a-f]{16}) issued", done.stdout).group(1)
    assert link.startswith(f"{served.url}/.rolegate/pass/")
    png, svg = out / f"daypass-{pass_id}.png", out / f"daypass-{pass_id}.svg"
    assert str(png) in done.stdout and png.read_bytes().startswith(b"\x89PNG") and "<svg" in svg.read_text()
    assert png.stat().st_mode & 0o077 == 0  # the QR code is the credential

    listed = rolegate("daypass", "list", "-c", config, cwd=tmp_path)
    assert listed.returncode == 0 and pass_id in listed.stdout and "Piet Bakker" in listed.stdout
    assert link.rsplit("/", 1)[1] not in listed.stdout  # never the code

    # The running server learns of the CLI's pass through the Store and the shared version board.
    phone = served.client()
    assert (await redeem(served, phone, link)).status == 303
    async with phone.get(f"{served.url}/workorders?building=a", headers=JSON) as resp:
        assert resp.status == 200 and "header_list" in await resp.json()

    revoked = rolegate("daypass", "revoke", "-c", config, link, "--reason", "finished early", cwd=tmp_path)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout, revoked.stderr
    async with phone.get(f"{served.url}/workorders?building=a", headers=HTML, allow_redirects=False) as resp:
        assert resp.status == 401 and "revoked" in await resp.text()

    assert pass_id not in rolegate("daypass", "list", "-c", config, cwd=tmp_path).stdout
    everything = rolegate("daypass", "list", "-c", config, "--all", cwd=tmp_path)
    assert pass_id in everything.stdout and "revoked" in everything.stdout
    again = rolegate("daypass", "revoke", "-c", config, pass_id, cwd=tmp_path)
    assert again.returncode == 0 and "already revoked" in again.stdout

    events = await served.audit_events()
    operator = f"cli:{getpass.getuser()}"
    assert [(e["action"], e["user"]) for e in events if e["action"] in ("issue", "revoke")] == [
        ("issue", operator),
        ("revoke", operator),
    ]


def test_cli_refuses_what_the_template_does_not_allow(tmp_path: Path) -> None:
    from tests.daypass.conftest import daypass_config
    import yaml

    config = tmp_path / "rolegate.yaml"
    config.write_text(yaml.safe_dump(daypass_config("http://127.0.0.1:8080", "http://127.0.0.1:8081", tmp_path)))
    done = rolegate(
        "daypass",
        "issue",
        "-c",
        str(config),
        "--template",
        "subcontractor",
        "--scope",
        "client:acme",
        "--name",
        "A",
        "--company",
        "B",
        "--reason",
        "C",
        "--out",
        str(tmp_path),
        cwd=tmp_path,
    )
    assert done.returncode == 2 and "building" in done.stderr
    done = rolegate(
        "daypass",
        "issue",
        "-c",
        str(config),
        "--template",
        "subcontractor",
        "--scope",
        "building:a",
        "--company",
        "B",
        "--reason",
        "C",
        cwd=tmp_path,
    )
    assert done.returncode == 2 and "name is required" in done.stderr
    done = rolegate("daypass", "revoke", "-c", str(config), "not-a-pass", cwd=tmp_path)
    assert done.returncode == 2
    done = rolegate("daypass", "revoke", "-c", str(config), "0123456789abcdef", cwd=tmp_path)
    assert done.returncode == 1 and "no day pass" in done.stderr
    assert list(tmp_path.glob("daypass-*")) == []

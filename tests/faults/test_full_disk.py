"""A full disk under the data directory: nothing is lost in silence.

``rolegate serve`` keeps its Store (SQLite) and a JSONL audit copy on a small tmpfs. Signed-in reads
(every one audited, ``audit.reads.sample: 1.0``) run while the disk is full and after it has room
again. Every answered read must be in the audit or counted in ``rolegate_audit_dropped_total``;
``/readyz`` must say the audit cannot be written and name the real error; the copy must have no torn
line, and ``rolegate audit verify`` must find it whole once the disk has room again.

Needs root (or CAP_SYS_ADMIN) to mount the tmpfs; where it cannot, the test fails and says why: it is
never skipped.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rolegate_lab import free_port, lab_client_session
from tests.support.disks import small_disk_at
from tests.support.serve import RolegateProcess

pytestmark = pytest.mark.lab

SECRET = "full-disk-session-secret-" + "f" * 40
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')
DISK = "8m"
READS_WHILE_FULL = 1500
CONCURRENCY = 16


@pytest.fixture
def small_disk(tmp_path: Path):
    """A DISK-sized tmpfs mounted on tmp_path/data, unmounted after the test."""
    with small_disk_at(tmp_path / "data", DISK) as data:
        yield data


def config(data: Path, port: int, backend_url: str, on_failure: str) -> dict:
    return {
        "server": {
            "listen": f"127.0.0.1:{port}",
            "public_url": f"http://127.0.0.1:{port}",
            "internal_listen": "127.0.0.1:0",
            "workers": 1,
        },
        "storage": {"url": f"sqlite:///{data}/rolegate.db"},
        "session": {"secret": SECRET},
        "scopes": {"building": {"description": "a building"}},
        "permissions": ["workorders:view"],
        "roles": {"subcontractor": {"permissions": ["workorders:view"]}},
        "upstreams": {"app": {"url": backend_url}},
        "routes": [{"path": "/me", "mode": "authenticated", "upstream": "app"}],
        "daypass": {
            "redeem_rate": "100/min",
            "templates": {
                "visit": {"role": "subcontractor", "scopes": ["building"], "expires": "8h", "require": ["name"]}
            },
        },
        # on_failure "serve" is the default: left out, so that the same config runs on older versions too.
        # A small queue: reads beyond three quarters of it are shed while the disk is full, and must be counted.
        "audit": {
            "sinks": ["store", "jsonl:data/audit.jsonl"],
            "reads": {"sample": 1.0},
            "queue_size": 300,
            **({"on_failure": on_failure} if on_failure != "serve" else {}),
        },
    }


def rolegate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rolegate", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


async def signed_in(served: RolegateProcess, workdir: Path) -> aiohttp.ClientSession:
    """A phone that redeemed a day pass issued on the command line."""
    issued = rolegate(
        "daypass",
        "issue",
        "-c",
        str(served.config_path),
        "--template",
        "visit",
        "--scope",
        "building:a",
        "--name",
        "Sam Smit",
        "--out",
        str(workdir / "qr"),
        cwd=workdir,
    )
    assert issued.returncode == 0, issued.stderr
    link = re.search(r"Link: (\S+)", issued.stdout).group(1)
    phone = lab_client_session()
    async with phone.get(link, headers={"Accept": "text/html"}) as page:
        assert page.status == 200, await page.text()
        token = CSRF_FIELD.search(await page.text()).group(1)
    async with phone.post(
        link, data={"csrf": token}, allow_redirects=False, headers={"Accept": "text/html", "Origin": served.url}
    ) as resp:
        assert resp.status == 303, await resp.text()
    return phone


async def reads(phone: aiohttp.ClientSession, url: str, count: int) -> dict[int, int]:
    """``count`` GET /me, CONCURRENCY at a time; how many got each status."""
    statuses: dict[int, int] = {}
    left = iter(range(count))

    async def client() -> None:
        for _ in left:
            async with phone.get(url + "/me", headers={"Accept": "application/json"}) as resp:
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1

    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return statuses


def fill(data: Path) -> None:
    """Write a filler file until the disk says no (bounded: the disk is DISK big)."""
    with open(data / "filler", "wb", buffering=0) as filler:
        for _ in range(10_000):
            try:
                filler.write(b"\0" * 65536)
            except OSError:
                return
    raise AssertionError("the tmpfs never filled up")


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


@pytest.mark.parametrize("on_failure", ["serve", "refuse"])
async def test_a_full_disk_loses_nothing_in_silence(small_disk, tmp_path, lab_backend, on_failure) -> None:
    port = free_port()
    served = RolegateProcess(config(small_disk, port, lab_backend.url, on_failure), tmp_path)
    served.start()
    try:
        phone = await signed_in(served, tmp_path)
        answered = {}
        try:
            before = await reads(phone, served.url, 50)
            assert before == {200: 50}
            assert served.readyz()[0] == 200

            await asyncio.to_thread(fill, small_disk)
            full_at = time.monotonic()
            during = await reads(phone, served.url, READS_WHILE_FULL)
            # /readyz says the audit cannot be written, and why (not "cannot rollback").
            for _ in range(100):
                status, body = served.readyz()
                if status == 503:
                    break
                await asyncio.sleep(0.1)
            assert status == 503, f"/readyz stayed ready with the disk full: {body}"
            audit = json.loads(body)["checks"]["audit"]
            assert audit["state"] == "unwritable", body
            assert any("ENOSPC" in error or "disk is full" in error for error in audit["targets"].values()), body
            if on_failure == "refuse":
                assert during.get(503, 0) > 0, during  # reads were refused rather than left unaudited

            # Room again: the audit catches up by itself and the instance is ready again.
            (small_disk / "filler").unlink()
            freed_at = time.monotonic()
            for _ in range(300):
                status, body = served.readyz()
                if status == 200:
                    break
                await asyncio.sleep(0.1)
            assert status == 200, f"/readyz not ready 30 s after the disk had room again: {body}"
            recovered_in = time.monotonic() - freed_at
            after = await reads(phone, served.url, 50)
            assert after == {200: 50}
            answered = {s: before.get(s, 0) + during.get(s, 0) + after.get(s, 0) for s in (200, 503)}
            async with aiohttp.ClientSession() as http:
                async with http.get(served.internal_url + "/metrics") as resp:
                    metrics = await resp.text()
        finally:
            await phone.close()
    finally:
        assert served.stop() == 0, served.log()
    log = served.log()
    print(
        f"full for {freed_at - full_at:.1f}s; ready again {recovered_in:.2f}s after the disk had room; "
        f"answered {answered}"
    )

    # Every answered read is in the audit, or counted as dropped.
    db = sqlite3.connect(small_disk / "rolegate.db")
    try:
        recorded = db.execute(
            "SELECT count(*) FROM audit WHERE kind='decision' AND json_extract(body, '$.path')="
            "'/me' AND json_extract(body, '$.decision')='allow'"
        ).fetchone()[0]
    finally:
        db.close()
    dropped = metric(metrics, "rolegate_audit_dropped_total", kind="decision", reason="queue_full")
    print(f"unwritable: {audit['targets']}; recorded {recorded}, dropped {dropped:.0f}")
    assert recorded + dropped >= answered[200], (recorded, dropped, answered)
    if on_failure == "serve":
        assert dropped > 0  # the small queue overflowed: what it could not keep was counted, not lost silently
    assert "cannot rollback" not in log
    assert "No space left on device" in log or "disk is full" in log, log

    # The copy has no torn line, and verify finds it whole and equal to the store.
    lines = (small_disk / "audit.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b""
    for line in lines[:-1]:
        json.loads(line)
    verified = rolegate("audit", "verify", "-c", str(served.config_path), cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "copy jsonl:" in verified.stdout and " OK: " in verified.stdout.split("copy jsonl:")[1], verified.stdout


METRIC_FILES_CHILD = """
import errno, os, sys
from rolegate.server.metric_files import ReservedMmapedDict
disk = sys.argv[1]
values = ReservedMmapedDict(os.path.join(disk, "counter_1.db"))
with open(os.path.join(disk, "filler"), "wb", buffering=0) as filler:
    for _ in range(10_000):
        try:
            filler.write(b"\\0" * 4096)
        except OSError:
            break
for i in range(500):  # new series on a full disk: the pages were reserved when the file was made
    values.write_value(f"series-{i}", float(i), 0.0)
try:
    ReservedMmapedDict(os.path.join(disk, "gauge_livesum_2.db"))
except OSError as exc:
    print("new file:", errno.errorcode[exc.errno], exc.strerror)
print("alive")
"""


def test_metric_files_do_not_kill_a_process_when_the_disk_fills(tmp_path) -> None:
    """Prometheus's per-process files are memory-mapped: writing a page with no block behind it on a full
    disk is SIGBUS. rolegate reserves their blocks; a file that cannot get them is an OSError."""
    with small_disk_at(tmp_path / "disk", "1m") as disk:
        child = subprocess.run(
            [sys.executable, "-c", METRIC_FILES_CHILD, str(disk)], capture_output=True, text=True, timeout=60
        )
    assert child.returncode == 0, f"exit {child.returncode} (-7 is SIGBUS): {child.stderr[-2000:]}"
    assert "alive" in child.stdout and "new file: ENOSPC" in child.stdout, child.stdout + child.stderr

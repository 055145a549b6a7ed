"""Directory sync benchmark: 100,000 users and 2,000 groups nested three deep in a private slapd.

    .venv/bin/python bench/bench_directory.py [--users 100000] [--groups 2000] [--changes 100] [--deletions 100]

Bulk-loads with slapadd (offline, minutes faster than ldapadd), then times a full sync and an
incremental sync after N changes, and reports peak RSS; then times load_snapshot in a fresh process. Entries are loaded with modifyTimestamps
spread over past days, as a real directory's history would be, so the incremental run's watermark sits
before the changes made now. Targets: full <= 30 s, incremental <= 2 s, peak RSS <= 600 MiB.

Deletions (issue 28): slapd runs the accesslog overlay, and the sync reads deletions from it
(``directory.accesslog``); then the same deletions are timed found by the id listing (no accesslog
configured: every incremental run reads every user's and group's entryUUID), and both with nothing
changed, which is what each interval costs. Target for the listing: within the default interval (30 s).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "deploy" / "lab"))
sys.path.insert(0, str(ROOT / "src"))

from rolegate_lab import Slapd  # noqa: E402

from rolegate.config.sections.directory import DirectoryConfig  # noqa: E402
from rolegate.config.sections.storage import StorageConfig  # noqa: E402
from rolegate.directory import DirectorySync  # noqa: E402
from rolegate.store import open_store  # noqa: E402

PEOPLE = "ou=people,dc=example,dc=com"
GROUPS = "ou=groups,dc=example,dc=com"
NOW = time.time()


def past(i: int) -> str:
    """A distinct moment in the last days for entry ``i``: a real directory's history is spread out."""
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(NOW - 86400 - 7 * i))
STEP_TIMEOUT = 900  # seconds for any one external step: the run is bounded


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def group_layout(count: int) -> tuple[list[str], dict[str, str]]:
    """Group names in three levels (1% top, 9% middle, 90% leaves) and child -> parent."""
    top = max(1, count // 100)
    middle = max(1, count * 9 // 100)
    leaves = max(1, count - top - middle)
    names = [f"top{i:03d}" for i in range(top)] + [f"mid{i:04d}" for i in range(middle)] + \
            [f"leaf{i:05d}" for i in range(leaves)]
    parent = {f"mid{i:04d}": f"top{i % top:03d}" for i in range(middle)}
    parent.update({f"leaf{i:05d}": f"mid{i % middle:04d}" for i in range(leaves)})
    return names, parent


def write_ldif(path: Path, users: int, groups: int, seed: int = 7) -> int:
    """Users, then groups (each with ~3 leaf memberships per user); returns member values written."""
    rng = random.Random(seed)
    names, parent = group_layout(groups)
    leaves = [n for n in names if n.startswith("leaf")]
    members: dict[str, list[str]] = {n: [] for n in names}
    for child, up in parent.items():
        members[up].append(f"cn={child},{GROUPS}")
    written = 0
    with path.open("w") as out:
        for i in range(users):
            uid = f"user{i:06d}"
            stamp = f"modifyTimestamp: {past(i)}\ncreateTimestamp: {past(i)}\n"
            out.write(f"dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: User {i}\n"
                      f"sn: {i}\nmail: {uid}@example.com\nemployeeType: {'disabled' if i % 97 == 0 else 'employee'}\n"
                      f"{stamp}\n")
            for leaf in rng.sample(leaves, min(3, len(leaves))):
                members[leaf].append(f"uid={uid},{PEOPLE}")
        for j, name in enumerate(names):
            stamp = f"modifyTimestamp: {past(j)}\ncreateTimestamp: {past(j)}\n"
            values = members[name] or [f"uid=user000000,{PEOPLE}"]
            written += len(values)
            out.write(f"dn: cn={name},{GROUPS}\nobjectClass: groupOfNames\ncn: {name}\n{stamp}")
            out.write("".join(f"member: {v}\n" for v in values))
            out.write("\n")
    return written


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=STEP_TIMEOUT, **kwargs)
    if result.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return result


def changes_ldif(users: int, groups: int, count: int, seed: int = 11) -> str:
    """``count`` changes: 90% user attribute edits, 10% group membership additions."""
    rng = random.Random(seed)
    names, _ = group_layout(groups)
    leaves = [n for n in names if n.startswith("leaf")]
    out = []
    group_changes = max(1, count // 10)
    for i in range(count - group_changes):
        uid = f"user{rng.randrange(users):06d}"
        out.append(f"dn: uid={uid},{PEOPLE}\nchangetype: modify\nreplace: mail\nmail: {uid}.{i}@new.example.com\n")
    for _ in range(group_changes):
        uid = f"user{rng.randrange(users):06d}"
        out.append(f"dn: cn={rng.choice(leaves)},{GROUPS}\nchangetype: modify\nadd: member\n"
                   f"member: uid={uid},{PEOPLE}\n")
    return "\n".join(out)


async def bench(args: argparse.Namespace, workdir: Path) -> list[tuple[str, str, str, str]]:
    slapd = Slapd(workdir / "slapd", seed=False, accesslog=True)
    say(f"starting a private slapd in {slapd.workdir} for its config and skeleton")
    slapd.start()
    slapd.stop()
    ldif = workdir / "bulk.ldif"
    began = time.monotonic()
    member_values = write_ldif(ldif, args.users, args.groups)
    say(f"wrote {args.users:,} users and {args.groups:,} groups ({member_values:,} member values) "
        f"in {time.monotonic() - began:.1f}s; slapadd ...")
    began = time.monotonic()
    run(["/usr/sbin/slapadd", "-q", "-f", str(slapd.conf_path), "-b", slapd.base_dn, "-l", str(ldif)])
    load_seconds = time.monotonic() - began
    say(f"slapadd took {load_seconds:.1f}s; starting slapd")
    slapd.start()
    rows: list[tuple[str, str, str, str]] = [("bulk load (slapadd)", f"{load_seconds:.1f} s", "-", "-")]
    try:
        settings = {
            "url": slapd.url, "bind_dn": slapd.service_dn, "bind_password": slapd.service_password,
            "users": {"base": PEOPLE, "disabled_filter": "(employeeType=disabled)"},
            "groups": {"base": GROUPS}, "page_size": 1000, "timeout": "60s",
        }
        config = DirectoryConfig.model_validate({**settings, "accesslog": "cn=accesslog"})
        listing_config = DirectoryConfig.model_validate(settings)
        store = await open_store(StorageConfig(url=f"sqlite:///{workdir / 'state.db'}"))
        try:
            sync = DirectorySync(config, store)
            say("full sync ...")
            began = time.monotonic()
            full = await sync.sync_now(full=True)
            full_seconds = time.monotonic() - began
            if not full.ok:
                raise SystemExit(f"full sync failed: {full.error or full.refusal}")
            snap = sync.snapshot
            sample = snap.user("user000001")
            say(f"full sync: {len(snap.users):,} users, {len(snap.groups):,} groups; "
                f"user000001 is in {len(sample.groups)} groups")
            rows.append(("full sync (read, build, diff, store)", f"{full_seconds:.2f} s", "<= 30 s",
                         "ok" if full_seconds <= 30 else "MISSED"))

            say(f"applying {args.changes} changes with ldapmodify ...")
            slapd.ldapmodify(changes_ldif(args.users, args.groups, args.changes))
            began = time.monotonic()
            inc = await sync.sync_now(full=False)
            inc_seconds = time.monotonic() - began
            if not inc.ok:
                raise SystemExit(f"incremental sync failed: {inc.error or inc.refusal}")
            counts = inc.diff.counts()
            say(f"incremental: read {inc.entries_read} entries; {counts}")
            rows.append((f"incremental after {args.changes} changes ({inc.entries_read} entries read)",
                         f"{inc_seconds:.2f} s", "<= 2 s", "ok" if inc_seconds <= 2 else "MISSED"))
            began = time.monotonic()
            again = await sync.sync_now(full=True)
            rows.append(("second full sync (agrees: empty diff)" if again.diff.empty else
                         "second full sync (DISAGREES with incremental)", f"{time.monotonic() - began:.2f} s",
                         "-", "ok" if again.diff.empty else "MISSED"))
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            rows.append(("peak RSS so far (before the deletion rounds)", f"{before:.0f} MiB", "-", "-"))
            rows += await deletions(args, slapd, sync, DirectorySync(listing_config, store))
        finally:
            await store.close()
    finally:
        slapd.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    rows.append(("peak RSS (this process)", f"{peak:.0f} MiB", "<= 600 MiB", "ok" if peak <= 600 else "MISSED"))
    # What every worker pays when the directory counter moves: a fresh process loading the snapshot.
    load_seconds, load_peak = measure_load(f"sqlite:///{workdir / 'state.db'}")
    rows.append(("load_snapshot in a worker (median of 3)", f"{load_seconds:.2f} s", "-", "-"))
    rows.append(("peak RSS of that worker process", f"{load_peak:.0f} MiB", "-", "-"))
    return rows


async def deletions(args: argparse.Namespace, slapd: Slapd, sync: DirectorySync, listing: DirectorySync
                    ) -> list[tuple[str, str, str, str]]:
    """Incremental runs that find deletions: from the accesslog (``sync``), by the id listing (``listing``)."""
    rows: list[tuple[str, str, str, str]] = []
    names, _ = group_layout(args.groups)
    leaves = [n for n in names if n.startswith("leaf")]
    victims = random.Random(13).sample(range(1, args.users), 2 * args.deletions)
    for round_, (runner, how, target, limit) in enumerate(
            ((sync, "accesslog", "<= 2 s", 2.0), (listing, "id listing", "<= 30 s", 30.0))):
        if runner is listing:
            listing.snapshot = sync.snapshot  # the same applied snapshot, read on without the accesslog
            listing.status.last_full = sync.status.last_full
        began = time.monotonic()
        idle = await runner.sync_now(full=False)
        idle_seconds = time.monotonic() - began
        if not idle.ok:
            raise SystemExit(f"incremental sync ({how}) failed: {idle.error or idle.refusal}")
        rows.append((f"incremental, nothing changed ({how})", f"{idle_seconds:.2f} s", target,
                     "ok" if idle_seconds <= limit else "MISSED"))
        gone = [f"uid=user{i:06d},{PEOPLE}" for i in victims[round_ * args.deletions:(round_ + 1) * args.deletions]]
        say(f"deleting {len(gone)} users and 1 group ({how}) ...")
        slapd.ldapmodify("".join(f"dn: {dn}\nchangetype: delete\n\n" for dn in gone)
                         + f"dn: cn={leaves[round_]},{GROUPS}\nchangetype: delete\n")
        began = time.monotonic()
        inc = await runner.sync_now(full=False)
        seconds = time.monotonic() - began
        if not inc.ok:
            raise SystemExit(f"incremental sync ({how}) failed: {inc.error or inc.refusal}")
        counts = inc.diff.counts()
        say(f"incremental ({how}): {counts}")
        found = counts["users_removed"] == len(gone) and counts["groups_removed"] == 1
        rows.append((f"incremental after deleting {len(gone)} users + 1 group ({how}; "
                     f"{counts['users_removed']} + {counts['groups_removed']} removed)", f"{seconds:.2f} s", target,
                     "ok" if seconds <= limit and found else "MISSED"))
    sync.snapshot = listing.snapshot
    began = time.monotonic()
    again = await sync.sync_now(full=True)
    rows.append(("full sync after the deletions (agrees: empty diff)" if again.diff.empty else
                 "full sync after the deletions (DISAGREES with incremental)", f"{time.monotonic() - began:.2f} s",
                 "-", "ok" if again.diff.empty else "MISSED"))
    return rows


LOAD_SCRIPT = """
import asyncio, json, sys, time
sys.path.insert(0, sys.argv[2])
from rolegate.config.sections.storage import StorageConfig
from rolegate.directory import load_snapshot
from rolegate.store import open_store

def hwm():
    # VmHWM, not ru_maxrss: the latter survives fork + exec and would report the parent's peak
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024

async def main():
    store = await open_store(StorageConfig(url=sys.argv[1]))
    times = []
    for _ in range(3):
        began = time.monotonic()
        snapshot = await load_snapshot(store)
        times.append(time.monotonic() - began)
        assert snapshot is not None and len(snapshot.users) > 0
        del snapshot
    await store.close()
    print(json.dumps({"seconds": sorted(times)[1], "peak": hwm()}))

asyncio.run(main())
"""


def measure_load(url: str) -> tuple[float, float]:
    """(median seconds, peak MiB) of load_snapshot in a fresh process, as a worker does it."""
    import json

    out = run([sys.executable, "-c", LOAD_SCRIPT, url, str(ROOT / "src")])
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return data["seconds"], data["peak"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=2_000)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--deletions", type=int, default=100, help="users deleted per deletion round")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if not Path("/usr/sbin/slapadd").exists():
        print("slapadd not found: run scripts/setup.sh (installs Debian's slapd)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="rolegate-bench-directory-"))
    try:
        rows = asyncio.run(bench(args, workdir))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    width = max(len(r[0]) for r in rows)
    print(f"\ndirectory sync: {args.users:,} users, {args.groups:,} groups nested 3 deep\n")
    print(f"{'phase':<{width}}  {'measured':>10}  {'target':>11}  result")
    for phase, measured, target, verdict in rows:
        print(f"{phase:<{width}}  {measured:>10}  {target:>11}  {verdict}")
    return 0 if all(r[3] != "MISSED" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

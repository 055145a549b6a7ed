"""A first full sync, phase by phase: time, RSS after each phase and the peak (issue 24).

    .venv/bin/python bench/bench_sync_phases.py [--users 100000] [--src OTHER/src]

Generates the directory `bench_directory.py` generates (users under ``ou=people``, groups nested three deep, every
user in three leaf teams) and loads it with slapadd into a private slapd, once: the loaded data is kept in
``--workdir`` (default ``/tmp/rolegate-sync-phases-<users>``) for the next run. Then, in a fresh process, one
first full sync into an empty SQLite Store, the way ``rolegate sync`` runs it: read + build, diff, store. ``--src``
times another checkout's ``src`` (an older commit: ``git worktree add /tmp/old <commit>``) on the same data, so
two versions compare in one sitting. Peak is VmHWM from /proc (the sync's whole process).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "deploy" / "lab"))
sys.path.insert(0, str(ROOT / "bench"))

PHASES = r"""
import asyncio, json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from rolegate.config.sections.directory import DirectoryConfig
from rolegate.config.sections.storage import StorageConfig
from rolegate.directory import DirectorySync, service
from rolegate.store import open_store

def memory():
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024

rows = []

def timed(name, call):
    def wrapper(*args, **kwargs):
        began = time.monotonic()
        out = call(*args, **kwargs)
        rows.append((name, time.monotonic() - began, *memory()))
        return out
    return wrapper

async def main():
    settings = json.loads(sys.argv[2])
    store = await open_store(StorageConfig(url=sys.argv[3]))
    sync = DirectorySync(DirectoryConfig.model_validate(settings), store)
    DirectorySync._read_and_build = timed("read + build", DirectorySync._read_and_build)
    DirectorySync._diff = timed("diff", DirectorySync._diff)
    service.build_snapshot = timed("(build)", service.build_snapshot)
    save = service.save_snapshot
    async def saved(*args, **kwargs):
        began = time.monotonic()
        out = await save(*args, **kwargs)
        rows.append(("store", time.monotonic() - began, *memory()))
        return out
    service.save_snapshot = saved
    began = time.monotonic()
    result = await sync.sync_now(full=True)
    rows.append(("whole sync", time.monotonic() - began, *memory()))
    await store.close()
    print(json.dumps({"ok": result.ok, "error": result.error, "users": result.users, "rows": rows}))

asyncio.run(main())
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=None, help="default: one group per 50 users")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the rolegate sources to time")
    args = parser.parse_args()
    groups = args.groups or max(1, args.users // 50)
    workdir = args.workdir or Path(f"/tmp/rolegate-sync-phases-{args.users}")

    import bench_directory as generator
    from rolegate_lab import Slapd

    slapd = Slapd(workdir / "slapd", seed=False, accesslog=False)
    loaded = workdir / "loaded"
    if not loaded.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        slapd.start()  # its config and skeleton
        slapd.stop()
        ldif = workdir / "bulk.ldif"
        generator.say(f"writing and loading {args.users:,} users, {groups:,} groups (once, kept in {workdir})")
        generator.run(
            [
                sys.executable,
                generator.__file__,
                "--write-ldif",
                str(ldif),
                "--users",
                str(args.users),
                "--groups",
                str(groups),
            ]
        )
        generator.run(["/usr/sbin/slapadd", "-q", "-f", str(slapd.conf_path), "-b", slapd.base_dn, "-l", str(ldif)])
        ldif.unlink()
        loaded.write_text(f"{args.users} {groups}\n")
    slapd._seeded = True  # keep the loaded data (a new Slapd object would start from an empty directory)
    slapd.start()
    try:
        settings = {
            "url": slapd.url,
            "bind_dn": slapd.service_dn,
            "bind_password": slapd.service_password,
            "users": {"base": generator.PEOPLE, "disabled_filter": "(employeeType=disabled)"},
            "groups": {"base": generator.GROUPS},
            "page_size": 1000,
            "timeout": "60s",
        }
        store = workdir / "state.db"
        for old in workdir.glob("state.db*"):
            old.unlink()
        out = subprocess.run(
            [sys.executable, "-c", PHASES, str(args.src), json.dumps(settings), f"sqlite:///{store}"],
            capture_output=True,
            text=True,
            timeout=generator.STEP_TIMEOUT,
        )
    finally:
        slapd.stop()
    if out.returncode != 0:
        raise SystemExit(f"the sync failed: {out.stderr.strip()[-2000:]}")
    report = json.loads(out.stdout.strip().splitlines()[-1])
    if not report["ok"]:
        raise SystemExit(f"the sync failed: {report['error']}")
    print(f"\nfirst full sync of {report['users']:,} users, {groups:,} groups ({args.src})\n")
    print(f"{'phase':<14}{'seconds':>10}{'RSS after':>14}{'peak so far':>14}")
    for name, seconds, rss, peak in report["rows"]:
        print(f"{name:<14}{seconds:>10.2f}{rss:>10.0f} MiB{peak:>10.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

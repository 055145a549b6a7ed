"""Directory sync benchmark: 100,000 users and 2,000 groups nested three deep in a private slapd.

    .venv/bin/python bench/bench_directory.py [--users 100000] [--groups 2000] [--changes 100] [--deletions 100]
    .venv/bin/python bench/bench_directory.py --users 1000000   # issue 24's table: a 100,000 row, then 1,000,000
    .venv/bin/python bench/bench_directory.py --sizes 1000000   # one size only (any list: --sizes 50000,200000)

Bulk-loads with slapadd (offline, minutes faster than ldapadd), then times a full sync and an
incremental sync after N changes, and reports peak RSS; then times load_snapshot in a fresh process. Entries are loaded with modifyTimestamps
spread over past days, as a real directory's history would be, so the incremental run's watermark sits
before the changes made now. Targets: full <= 30 s, incremental <= 2 s, peak RSS <= 600 MiB.

Serving (issue 24): then ``rolegate serve`` runs with 2 workers on the synced Store (the master runs the sync,
the workers map the shared snapshot file), 400 signed-in users of the directory ask for an enforce route through
both workers, and the resident memory (RSS, and PSS: shared pages counted once across the processes) of the
master and of each worker is read from /proc. Targets: each worker <= 150 MB RSS; at 1,000,000 users a full sync
<= 60 s with <= 1 GiB peak.

Deletions (issue 28): slapd runs the accesslog overlay, and the sync reads deletions from it
(``directory.accesslog``); then the same deletions are timed found by the id listing (no accesslog
configured: every incremental run reads every user's and group's entryUUID), and both with nothing
changed, which is what each interval costs. Target for the listing: within the default interval (30 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE_BASE = 100_000  # ``--users`` above it runs this size first, for the summary table's two rows
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


async def bench(args: argparse.Namespace, workdir: Path, summary: dict[str, float]) -> list[tuple[str, str, str, str]]:
    slapd = Slapd(workdir / "slapd", seed=False, accesslog=True)
    say(f"starting a private slapd in {slapd.workdir} for its config and skeleton")
    slapd.start()
    slapd.stop()
    ldif = workdir / "bulk.ldif"
    began = time.monotonic()
    # In a process of its own: its member lists (3 per user) must not count in this process's peak, the sync's.
    written = run([sys.executable, __file__, "--write-ldif", str(ldif), "--users", str(args.users),
                   "--groups", str(args.groups)])
    member_values = int(written.stdout.split()[-1])
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
            sync_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # nothing before it was larger
            summary.update(full=full_seconds, sync_peak=sync_peak)
            limit = 60 if args.users > 100_000 else 30
            rows.append(("full sync (read, build, diff, store)", f"{full_seconds:.2f} s", f"<= {limit} s",
                         "ok" if full_seconds <= limit else "MISSED"))
            rows.append(("peak RSS of the sync", f"{sync_peak:.0f} MiB", "<= 1024 MiB",
                         "ok" if sync_peak <= 1024 else "MISSED"))

            say("workers map the stored snapshot (base + top files) ...")
            runtime = workdir / "runtime-directory"
            measure_map(f"sqlite:///{workdir / 'state.db'}", runtime)
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
            cost = measure_map(f"sqlite:///{workdir / 'state.db'}", runtime)
            rows.append(("... its version mapped by the first worker (top file over the base)",
                         f"{cost['build'] * 1000:.0f} ms", "-", "requests wait this long"))
            began = time.monotonic()
            again = await sync.sync_now(full=True)
            rows.append(("second full sync (agrees: empty diff)" if again.diff.empty else
                         "second full sync (DISAGREES with incremental)", f"{time.monotonic() - began:.2f} s",
                         "-", "ok" if again.diff.empty else "MISSED"))
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            rows.append(("peak RSS so far (before the deletion rounds)", f"{before:.0f} MiB", "-", "-"))
            rows += await deletions(args, slapd, sync, DirectorySync(listing_config, store))
            del sync, snap, sample
        finally:
            await store.close()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
        rows.append(("peak RSS (this process, every round)", f"{peak:.0f} MiB", "-", "-"))
        rows += await serving(args, slapd, workdir, settings, summary)
    finally:
        slapd.stop()
    # What a worker pays when the directory counter moves: the first one builds the shared file, the rest map it.
    cost = measure_map(f"sqlite:///{workdir / 'state.db'}")
    rows.append((f"shared snapshot file built by the first worker ({cost['size']:.0f} MiB)", f"{cost['build']:.2f} s",
                 "-", f"peak RSS {cost['peak']:.0f} MiB, after {cost['rss']:.0f} MiB"))
    rows.append(("... mapped by every other worker", f"{cost['map'] * 1000:.1f} ms", "-", "-"))
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


def _memory(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of one process in MB (10^6 bytes, as the issue's table): PSS counts shared pages once."""
    with open(f"/proc/{pid}/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            pss = next(int(line.split()[1]) for line in rollup if line.startswith("Pss:"))
    except OSError:
        pss = 0
    return rss * 1024 / 1e6, pss * 1024 / 1e6


def _workers(pid: int) -> list[int]:
    """The master's worker processes (not multiprocessing's resource tracker, also its child)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"resource_tracker" not in command:
                found.append(child)
    return found


def _get(url: str, cookie: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


async def serving(args: argparse.Namespace, slapd: Slapd, workdir: Path, settings: dict,
                  summary: dict[str, float]) -> list[tuple[str, str, str, str]]:
    """``rolegate serve`` (2 workers) on the synced Store; signed-in users through both workers; memory."""
    sys.path.insert(0, str(ROOT / "bench"))
    from session_cookie import make_cookies

    port, internal = free_port(), free_port()
    names, _ = group_layout(args.groups)
    config = {
        "server": {"listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}", "workers": 2,
                   "internal_listen": f"127.0.0.1:{internal}"},
        "storage": {"url": f"sqlite:///{workdir / 'state.db'}"},
        "directory": {**settings, "bind_password": slapd.service_password, "interval": "30s"},
        "permissions": ["bench:view"],
        "roles": {"viewer": {"permissions": ["bench:view"]}},
        # every user is in three leaves, so some leaves' members are allowed, the rest denied
        "bindings": [{"group": name, "role": "viewer"} for name in names if name.startswith("leaf")][::3],
        "upstreams": {"app": {"url": "http://127.0.0.1:9"}},  # nothing listens: allowed requests answer 502
        "routes": [{"path": "/api/**", "mode": "enforce", "permission": "bench:view", "upstream": "app"}],
        "session": {"secret": "bench-session-secret-" + "d" * 40},
        "audit": {"sinks": ["store"]},
    }
    path = workdir / "rolegate.yaml"
    path.write_text(json.dumps(config))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    log = (workdir / "serve.log").open("w")
    began = time.monotonic()
    server = subprocess.Popen([sys.executable, "-m", "rolegate", "--log-level", "WARNING", "serve", "-c", str(path)],
                              stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    rows: list[tuple[str, str, str, str]] = []
    try:
        while _ready(internal) != 200:
            if server.poll() is not None or time.monotonic() - began > STEP_TIMEOUT:
                raise SystemExit(f"rolegate serve did not become ready; see {workdir / 'serve.log'}")
            await asyncio.sleep(0.5)
        ready_seconds = time.monotonic() - began
        rnd = random.Random(5)
        people = [f"user{rnd.randrange(1, args.users):06d}" for _ in range(400)]
        cookies = await make_cookies(str(path), [(who, []) for who in people])  # one parse of a 250 KB config
        statuses: dict[int, int] = {}
        for _round in range(3):  # keep-alive off: connections land on both workers
            for cookie in cookies:
                status = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/api/x", cookie)
                statuses[status] = statuses.get(status, 0) + 1
        workers = _workers(server.pid)
        master_rss, master_pss = _memory(server.pid)
        worker_memory = [_memory(pid) for pid in workers]
        worst = max((rss for rss, _ in worker_memory), default=0.0)
        summary.update(master=master_rss, worker=worst, ready=ready_seconds)
        say(f"serve: ready in {ready_seconds:.1f}s; answers {statuses}; master RSS {master_rss:.0f} MB; "
            f"workers RSS {[round(r) for r, _ in worker_memory]} MB, PSS {[round(p) for _, p in worker_memory]} MB")
        decided = statuses.get(403, 0) + statuses.get(502, 0)
        rows.append((f"serve, 2 workers: ready (workers mapped the snapshot); {decided} of "
                     f"{sum(statuses.values())} answers decided (403/502)", f"{ready_seconds:.1f} s", "-",
                     "ok" if decided == sum(statuses.values()) and len(workers) == 2 else "MISSED"))
        rows.append(("master RSS serving (runs the sync)", f"{master_rss:.0f} MB", "-", f"PSS {master_pss:.0f} MB"))
        for index, (rss, pss) in enumerate(worker_memory):
            rows.append((f"worker {index} RSS serving", f"{rss:.0f} MB", "<= 150 MB",
                         f"{'ok' if rss <= 150 else 'MISSED'} (PSS {pss:.0f} MB)"))
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
        log.close()
    return rows


def _ready(port: int) -> int:
    """/readyz's status, 0 while nothing answers."""
    try:
        return _get(f"http://127.0.0.1:{port}/readyz")
    except OSError:
        return 0


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


MAP_SCRIPT = """
import asyncio, json, shutil, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from rolegate.config.sections.storage import StorageConfig
from rolegate.directory.shared import map_snapshot
from rolegate.store import open_store

def status(field):
    # VmHWM, not ru_maxrss: the latter survives fork + exec and would report the parent's peak
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field)) / 1024

async def measure():
    store = await open_store(StorageConfig(url=sys.argv[1]))
    kept = len(sys.argv) > 3  # a directory a worker used before: what a new stored version costs
    where = Path(sys.argv[3]) if kept else Path(tempfile.mkdtemp(prefix="rolegate-bench-map-"))
    began = time.monotonic()
    built = await map_snapshot(store, where)
    build = time.monotonic() - began
    assert built is not None and len(built) > 0
    began = time.monotonic()
    again = await map_snapshot(store, where)
    mapped = time.monotonic() - began
    assert again is not None and again.user("user000001") is not None
    await store.close()
    size = sum(p.stat().st_size for p in where.glob("*.map")) / 2**20
    del built, again
    if not kept:
        shutil.rmtree(where)
    print(json.dumps({"build": build, "map": mapped, "peak": status("VmHWM"), "rss": status("VmRSS"),
                      "size": size}))

asyncio.run(measure())
"""


def measure_map(url: str, where: Path | None = None) -> dict[str, float]:
    """What the first worker of a server pays when the directory counter moves (building the shared files),
    and what each other worker pays (mapping them), in a fresh process; with ``where``, a runtime directory
    kept from before (the base file there already)."""
    out = run([sys.executable, "-c", MAP_SCRIPT, url, str(ROOT / "src"), *([str(where)] if where else [])])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=None, help="default: one group per 50 users")
    parser.add_argument("--sizes", default=None, help="user counts to run one after the other, e.g. 100000,1000000")
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--deletions", type=int, default=100, help="users deleted per deletion round")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--write-ldif", help=argparse.SUPPRESS)  # the generator's own process (see bench())
    parser.add_argument("--summary", help=argparse.SUPPRESS)  # one size's process writes its summary here
    args = parser.parse_args()
    if args.write_ldif:
        print(write_ldif(Path(args.write_ldif), args.users, args.groups))
        return 0
    if not Path("/usr/sbin/slapadd").exists():
        print("slapadd not found: run scripts/setup.sh (installs Debian's slapd)", file=sys.stderr)
        return 2
    if args.sizes:
        sizes = [int(n) for n in args.sizes.split(",")]
    elif args.users > TABLE_BASE and not args.summary:
        sizes = [TABLE_BASE, args.users]  # issue 24's table: the 100,000 row beside the larger one
    else:
        sizes = [args.users]
    groups = args.groups
    summaries: list[tuple[int, int, dict[str, float]]] = []
    failed = False
    if len(sizes) > 1:
        # Each size in a process of its own: the sync's peak is then its own, not what an earlier size's rounds left
        # in this process (the peak counted is this process's whole life).
        for users in sizes:
            with tempfile.NamedTemporaryFile(suffix=".json") as out:
                command = [sys.executable, __file__, "--users", str(users), "--changes", str(args.changes),
                           "--deletions", str(args.deletions), "--summary", out.name,
                           *(["--groups", str(groups)] if groups else []), *(["--keep"] if args.keep else [])]
                child = subprocess.run(command, timeout=4 * 3600)
                failed |= child.returncode != 0
                done = json.loads(Path(out.name).read_text() or "null")
            if done is not None:
                summaries.append((done["users"], done["groups"], done["summary"]))
        print_summary(summaries)
        return 1 if failed else 0
    for users in sizes:
        args.users, args.groups = users, groups or max(10, users // 50)
        workdir = Path(tempfile.mkdtemp(prefix="rolegate-bench-directory-"))
        summary: dict[str, float] = {}
        try:
            rows = asyncio.run(bench(args, workdir, summary))
        finally:
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
        width = max(len(r[0]) for r in rows)
        print(f"\ndirectory sync: {args.users:,} users, {args.groups:,} groups nested 3 deep\n")
        print(f"{'phase':<{width}}  {'measured':>10}  {'target':>11}  result")
        for phase, measured, target, verdict in rows:
            print(f"{phase:<{width}}  {measured:>10}  {target:>11}  {verdict}")
        failed |= any(r[3].startswith("MISSED") for r in rows)
        summaries.append((args.users, args.groups, summary))
        if args.summary:
            Path(args.summary).write_text(json.dumps({"users": args.users, "groups": args.groups, "summary": summary}))
    print_summary(summaries)
    return 1 if failed else 0


def print_summary(summaries: list[tuple[int, int, dict[str, float]]]) -> None:
    print("\n| users / groups | `rolegate sync` full | peak RSS of the sync | master RSS serving | each worker RSS serving |")
    print("|---|---|---|---|---|")
    for users, group_count, summary in summaries:
        print(f"| {users:,} / {group_count:,} | {summary.get('full', 0):.1f} s | {summary.get('sync_peak', 0):.0f} MiB | "
              f"{summary.get('master', 0):.0f} MB | {summary.get('worker', 0):.0f} MB |")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Scale-out bench: 1 and 2 rolegate instances on PostgreSQL+Redis vs SQLite, in one run.

    .venv/bin/python bench/bench_scale.py [--duration 5] [--reps 3] [--connections 32] [--quick]

Every row is the real ``rolegate serve`` (``workers: 1`` per instance) in front of one nginx
upstream answering a 200-byte JSON from memory, on an ``enforce`` route (permission ``bench:view``,
granted to group ``bench``), with a signed-in session cookie sent by wrk (``-H 'Cookie: ...'``).
The session is written into the row's own Store and sealed by bench/session_cookie.py exactly as
``/.rolegate/callback`` does after a real sign-in (sessions.py's SessionStore.create), so the proxy
authenticates it through its normal cookie path. Assertions are minted (cached) as in production.

Rows: backend (sqlite | postgres+redis) x instances (1 | 2) x reads audited (on, the default, | off).
- 1 instance: the server on cpu 1, wrk on cpu 0 (like bench/run.py).
- 2 instances: both servers on cpus 0,1, one wrk per instance on cpu 0 (this machine has 2 cores, so
  the second instance shares a core with wrk and the upstream: scaling headroom, not a clean figure).
- PostgreSQL+Redis: a fresh database (migrated with ``rolegate migrate -c``) and Redis prefix per row;
  the two instances name the database differently (``application_name``) so they do not share a
  version board, like instances on two machines. SQLite: both instances open the same file.

Per-decision cost: CPU seconds the rolegate processes (master + workers) used during the measured
runs divided by the requests they answered (µs CPU per request, the whole request incl. proxying);
"store µs/req" is the same for the PostgreSQL + Redis server processes (other load on the machine
counts too; SQLite's cost is inside the rolegate processes). Results: a table on stdout and
bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from run import (PATH, PAYLOAD, Running, Target, free_port, session_cookie, stop_session,  # noqa: E402
                 upstream_cmd)

PYTHON = sys.executable
PG_ADMIN = os.environ.get("ROLEGATE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("ROLEGATE_BENCH_REDIS", "redis://127.0.0.1:6379/0")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- CPU accounting ------------------------------------------------------------------

def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime (after the state field)
    return total / CLK_TCK


def tree(pid: int) -> list[int]:
    out = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        for child in children.read_text().split():
            out += tree(int(child))
    except OSError:
        pass
    return out


def store_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if comm.startswith(("postgres", "redis-server")):
                pids.append(int(entry.name))
    return pids


# -- backends ------------------------------------------------------------------------

class Backend:
    """A fresh store for one row: its storage section per instance, and cleanup."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.tmp = tmp
        self.db_name: str | None = None
        self.prefix = f"rg_bench_{secrets.token_hex(5)}:"

    def __enter__(self) -> "Backend":
        if self.kind == "postgres+redis":
            self.db_name = f"rg_bench_{secrets.token_hex(6)}"
            asyncio.run(_admin(f'CREATE DATABASE "{self.db_name}"'))
        return self

    def storage(self, index: int) -> dict:
        if self.kind == "sqlite":
            return {"url": f"sqlite:///{self.tmp}/rolegate.db"}
        base = PG_ADMIN.rsplit("/", 1)[0]
        return {"url": f"{base}/{self.db_name}?application_name=rolegate-bench-{index}", "cache_url": REDIS_URL,
                "cache_prefix": self.prefix}

    def __exit__(self, *exc: object) -> None:
        if self.db_name is not None:
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)'))
            asyncio.run(_forget(self.prefix))


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _forget(prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


# -- instances -----------------------------------------------------------------------

def write_config(tmp: Path, port: int, upstream: str, storage: dict, audit_reads: bool) -> Path:
    config = {
        "server": {"listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}", "workers": 1},
        "storage": storage,
        "session": {"secret": "bench-scale-session-secret-" + "b" * 40},
        "tokens": {"key_secret": "bench-scale-key-secret-" + "k" * 40},
        "permissions": ["bench:view"],
        "roles": {"viewer": {"permissions": ["bench:view"]}},
        "bindings": [{"group": "bench", "role": "viewer"}],
        "upstreams": {"app": {"url": upstream}},
        "routes": [{"path": "/api/**", "mode": "enforce", "permission": "bench:view", "upstream": "app"}],
        "audit": {"sinks": ["store"], "reads": {"enabled": audit_reads, "sample": 1.0}},
    }
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "rolegate.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


class Instance:
    def __init__(self, config: Path, port: int, cpus: str) -> None:
        self.port = port
        self.log = open(config.parent / "server.log", "wb")
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        self.proc = subprocess.Popen(["taskset", "-c", cpus, PYTHON, "-m", "rolegate", "--log-level", "WARNING",
                                      "serve", "-c", str(config)], stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        self.config = config

    def wait_ready(self, cookie: str | None, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if cookie is None:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        return
                req = urllib.request.Request(f"http://127.0.0.1:{self.port}{PATH}", headers={"Cookie": cookie})
                with urllib.request.urlopen(req, timeout=2) as resp:
                    if resp.status == 200 and resp.read() == PAYLOAD.encode():
                        return
            except Exception as exc:  # noqa: BLE001 - not up yet
                last = exc
            time.sleep(0.1)
        raise SystemExit(f"instance on {self.port} not ready ({last}):\n"
                         + (self.config.parent / "server.log").read_text(errors="replace")[-3000:])

    def pids(self) -> list[int]:
        return tree(self.proc.pid)

    def stop(self) -> None:
        stop_session(self.proc, 20)
        self.log.close()


# -- wrk -----------------------------------------------------------------------------

def wrk(port: int, duration: int, connections: int, cookie: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["taskset", "-c", "0", "wrk", "-t1", f"-c{connections}", f"-d{duration}s",
                             "-H", f"Cookie: {cookie}", "--latency", f"http://127.0.0.1:{port}{PATH}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def parse(out: str) -> dict:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)$", out, re.M).group(1)
    p99 = re.search(r"^\s+99%\s+(\S+)$", out, re.M).group(1)
    return {"rps": rps, "requests": requests, "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "p50_ms": _ms(p50), "p99_ms": _ms(p99)}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


def run_load(instances: list[Instance], duration: int, connections: int, cookie: str) -> dict:
    """One wrk per instance, at the same time; summed throughput, CPU per request."""
    pids = [p for inst in instances for p in inst.pids()]
    backing = store_pids()
    cpu0, store0, t0 = cpu_seconds(pids), cpu_seconds(backing), time.monotonic()
    procs = [wrk(inst.port, duration, max(1, connections // len(instances)), cookie) for inst in instances]
    outs = [p.communicate(timeout=duration + 60)[0] for p in procs]
    cpu = cpu_seconds(pids) - cpu0
    store_cpu = cpu_seconds(backing) - store0
    runs = [parse(o) for o in outs]
    requests = sum(r["requests"] for r in runs)
    return {"rps": sum(r["rps"] for r in runs), "requests": requests, "non_2xx": sum(r["non_2xx"] for r in runs),
            "p50_ms": max(r["p50_ms"] for r in runs), "p99_ms": max(r["p99_ms"] for r in runs),
            "cpu_us_per_req": cpu / requests * 1e6 if requests else 0.0,
            "store_cpu_us_per_req": store_cpu / requests * 1e6 if requests else 0.0,
            "wall_s": time.monotonic() - t0}


@dataclass
class Row:
    backend: str
    instances: int
    audit_reads: bool
    runs: list[dict] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.backend}, {self.instances} instance{'s' if self.instances > 1 else ''}" + (
            "" if self.audit_reads else ", reads unaudited")

    def median(self) -> dict:
        return sorted(self.runs, key=lambda r: r["rps"])[len(self.runs) // 2]


def measure(row: Row, upstream: str, args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="rolegate-bench-scale-"))
    instances: list[Instance] = []
    try:
        with Backend(row.backend, tmp) as backend:
            cpus = "1" if row.instances == 1 else "0,1"
            configs = [write_config(tmp / f"i{i}", free_port(), upstream, backend.storage(i), row.audit_reads)
                       for i in range(row.instances)]
            if row.backend != "sqlite":
                out = subprocess.run([PYTHON, "-m", "rolegate", "migrate", "-c", str(configs[0])], capture_output=True,
                                     text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
                if out.returncode != 0:
                    raise SystemExit(f"rolegate migrate failed:\n{out.stdout}{out.stderr}")
            for config in configs:
                port = json.loads(config.read_text())["server"]["listen"].rsplit(":", 1)[1]
                instances.append(Instance(config, int(port), cpus))
            for inst in instances:
                inst.wait_ready(None)
            cookie = session_cookie(configs[0]).removeprefix("Cookie: ")
            for inst in instances:
                inst.wait_ready(cookie)
            print(f"  {row.name}: warm-up", flush=True)
            run_load(instances, 1, args.connections, cookie)
            for _ in range(args.reps):
                result = run_load(instances, args.duration, args.connections, cookie)
                row.runs.append(result)
                print(f"    {result['rps']:.0f} req/s, {result['cpu_us_per_req']:.0f} µs CPU/req"
                      + (f"  ({result['non_2xx']} non-2xx!)" if result["non_2xx"] else ""), flush=True)
    finally:
        for inst in instances:
            inst.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="3 s x 1 rep")
    parser.add_argument("--only", default="", help="comma-separated substrings of row names, e.g. 'unaudited'")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.reps = 3, 1
    for tool in ("wrk", "nginx", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found")

    rows = [Row(backend, n, audit) for audit in (True, False) for n in (1, 2) for backend in ("sqlite", "postgres+redis")]
    only = [o.strip() for o in args.only.split(",") if o.strip()]
    if only:
        rows = [r for r in rows if any(o in r.name for o in only)]
    upstream_target = Target("upstream (nginx return)", upstream_cmd, is_upstream=True, cpus="0,1")
    upstream_url = f"http://127.0.0.1:{upstream_target.port}"
    print(f"rolegate scale bench: wrk -t1 -c{args.connections} -d{args.duration}s x{args.reps} (median), "
          f"enforce route, session cookie, workers: 1 per instance", flush=True)
    upstream = Running(upstream_target, upstream_url)
    try:
        upstream.wait_ready()
        for row in rows:
            measure(row, upstream_url, args)
    finally:
        upstream.stop()

    header = (f"{'rows':<44} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'µs CPU/req':>10} {'store µs/req':>12} "
              f"{'vs sqlite':>9}")
    print()
    print(header)
    print("-" * len(header))
    by_key = {(r.backend, r.instances, r.audit_reads): r.median() for r in rows}
    results = []
    for row in rows:
        m = row.median()
        base = by_key.get(("sqlite", row.instances, row.audit_reads))
        ratio = m["rps"] / base["rps"] if base and base["rps"] else 0.0
        flag = f"  ({sum(r['non_2xx'] for r in row.runs)} non-2xx!)" if any(r["non_2xx"] for r in row.runs) else ""
        print(f"{row.name:<44} {m['rps']:>8.0f} {m['p50_ms']:>7.2f} {m['p99_ms']:>7.2f} "
              f"{m['cpu_us_per_req']:>10.0f} {m['store_cpu_us_per_req']:>12.1f} {ratio:>8.2f}x{flag}")
        results.append({"row": row.name, "backend": row.backend, "instances": row.instances,
                        "audit_reads": row.audit_reads, **m, "vs_sqlite": ratio,
                        "rps_all": [r["rps"] for r in row.runs]})
    out_dir = BENCH / "results"
    out_dir.mkdir(exist_ok=True)
    meta = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "duration_s": args.duration, "reps": args.reps,
            "connections": args.connections, "cores": os.cpu_count(), "python": sys.version.split()[0]}
    (out_dir / "scale.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"\nwrote {out_dir / 'scale.json'}")


if __name__ == "__main__":
    main()

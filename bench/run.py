#!/usr/bin/env python3
"""One-command data-path benchmark: upstream, nginx, naive aiohttp proxy, rolegate.

    .venv/bin/python bench/run.py [--duration 5] [--reps 3] [--connections 32]
                                  [--only NAME,...] [--workers2]

Every row proxies to the SAME upstream (nginx answering a 200-byte JSON from
memory, far faster than any proxy here). Servers run under ``taskset -c 1``,
wrk under ``taskset -c 0``; each row is warmed up, then measured REPS times and
the median (by req/s) is reported. The rolegate rows behind each ratio are
measured interleaved, rep by rep, in alternating order (A B C, C B A, ...) with
all their servers up, and the ratio is the median of per-rep ratios; rows whose
config is identical (public, authenticated, enforce: they differ only in the
route requested) even run on one server. So a ratio compares rows, not the
machine's drift between them. Results: a table on
stdout and ``bench/results/latest.json``.

Forward-auth rows (issue 21) run a front proxy (nginx ``auth_request``, Caddy ``forward_auth``) and
``rolegate serve`` (1 worker) together on the server cpu, beside the same front proxying alone; day-pass
rows carry a pass session (bench/credentials.py: issued, claimed and sealed as redeeming its link does),
bearer rows a token from rolegate's own token endpoint (minted last: a pass issued later would move the
permission version and make an earlier token stale).

Targets are data (see ``TARGETS``): a name, how to build its command line
(given a private temp dir, its port and the upstream URL), and how many worker
processes it runs. A ``rolegate serve -c <generated config>`` row is one more
entry once ``serve`` takes a bench config.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import _steady  # bench/_steady.py: this script's own directory is on sys.path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable
PAYLOAD = json.dumps({
    "id": 4711, "building": "a", "status": "open", "title": "Replace filter in AHU-3",
    "assignee": "technician-17", "due": "2024-06-30", "tags": ["hvac", "maintenance"],
    "notes": "x" * 40,
}, separators=(",", ":"))
PATH = "/api/bench.json"          # rolegate: an enforce route
PUBLIC_PATH = "/public/bench.json"  # rolegate: a public route
AUTH_PATH = "/auth/bench.json"      # rolegate: an authenticated route
SITE_PATH = "/site/a/bench.json"    # rolegate: an enforce route scoped to building:a (a day pass's)
SERVER_CPUS = "1"
WRK_CPUS = "0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- target definitions ------------------------------------------------------------

_NGINX_COMMON = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/client_body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  {body}
}}
"""


def _nginx(tmp: Path, body: str) -> list[str]:
    conf = tmp / "nginx.conf"
    conf.write_text(_NGINX_COMMON.format(tmp=tmp, body=body))
    return ["nginx", "-e", str(tmp / "error.log"), "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"]


def upstream_cmd(tmp: Path, port: int, upstream: str) -> list[str]:
    body = f"""server {{
    listen 127.0.0.1:{port};
    location / {{ default_type application/json; return 200 '{PAYLOAD}'; }}
  }}"""
    return _nginx(tmp, body)


def nginx_proxy_cmd(tmp: Path, port: int, upstream: str) -> list[str]:
    host = upstream.removeprefix("http://")
    body = f"""upstream app {{ server {host}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}"""
    return _nginx(tmp, body)


def naive_cmd(workers: int) -> Callable[[Path, int, str], list[str]]:
    def cmd(tmp: Path, port: int, upstream: str) -> list[str]:
        return [PYTHON, str(BENCH / "naive_proxy.py"), str(port), upstream, "--workers", str(workers)]
    return cmd


def rolegate_serve_cmd(workers: int = 1, mode: str = "public", *, assertion: bool = True,
                       audit_reads: bool = True, read_sample: float = 0.01,
                       durable_writes: bool = True, forward_auth: str | None = None,
                       lean_port: int | None = None) -> Callable[[Path, int, str], list[str]]:
    """The real ``rolegate serve`` on a generated config: one route in ``mode`` in front of the upstream.

    Non-public modes get a session section (the bench signs in with a session cookie minted by
    bench/session_cookie.py); ``enforce`` needs ``bench:view``, granted to group ``bench``. Allowed
    reads are audited at ``read_sample`` (0.01 as in the contract's config-shape.yaml); denials and
    writes always are.
    """
    def cmd(tmp: Path, port: int, upstream: str) -> list[str]:
        # Every rolegate row runs this same config and differs only in the route it requests, so a
        # ratio between rows isolates the mode (public / authenticated / enforce).
        routes = [{"path": "/public/**", "mode": "public", "upstream": "app"},
                  {"path": "/auth/**", "mode": "authenticated", "upstream": "app"},
                  {"path": "/api/**", "mode": "enforce", "permission": "bench:view", "upstream": "app"},
                  # A scoped route: what a day pass (bound at building:a) opens; SSO rows request it too.
                  {"path": "/site/{building}/**", "mode": "enforce", "permission": "bench:view",
                   "scope": "building:{building}", "upstream": "app"}]
        server = {"listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}", "workers": workers}
        if forward_auth is not None:
            server["forward_auth"] = {"proxy": forward_auth}
            if lean_port is not None:  # the lean forward-auth listener (rolegate.server.lean_auth)
                server["forward_auth"]["listen"] = f"127.0.0.1:{lean_port}"
        config = {
            "server": server,
            "storage": {"url": f"sqlite:///{tmp}/rolegate.db"},
            "scopes": {"building": {}},
            "permissions": ["bench:view"],
            "roles": {"viewer": {"permissions": ["bench:view"]}},
            "bindings": [{"group": "bench", "role": "viewer"}],
            "upstreams": {"app": {"url": upstream}},
            "routes": routes,
            "tokens": {"assertion": assertion, "lifetime": "1h"},
            "daypass": {"templates": {"bench": {"role": "viewer", "scopes": ["building"], "max_lifetime": "24h",
                                                "devices": 1}}},
            "audit": {"sinks": ["store"], "reads": {"enabled": audit_reads, "sample": read_sample},
                      "durable_writes": durable_writes},
        }
        config["session"] = {"secret": "bench-session-secret-" + "b" * 40}
        (tmp / "rolegate.yaml").write_text(json.dumps(config))  # JSON is YAML
        return [PYTHON, "-m", "rolegate", "--log-level", "WARNING", "serve", "-c", str(tmp / "rolegate.yaml")]
    return cmd


def _rolegate_and(front: Callable[[Path, int, str, int], str], proxy: str, *,
                  lean: bool = False) -> Callable[[Path, int, str], list[str]]:
    """A front proxy on ``port`` asking a ``rolegate serve`` (forward-auth, ``proxy`` convention) on a port
    of its own, then proxying to the upstream itself: both in one process group (``sh``), so the row's
    taskset holds both and stopping the row stops both. ``lean``: the front asks the lean forward-auth
    listener (``server.forward_auth.listen``) instead of the main one."""
    def cmd(tmp: Path, port: int, upstream: str) -> list[str]:
        rolegate_port = free_port()
        lean_port = free_port() if lean else None
        serve = rolegate_serve_cmd(1, "enforce", forward_auth=proxy, lean_port=lean_port)(tmp, rolegate_port,
                                                                                          upstream)
        (tmp / "rolegate.url").write_text(f"http://127.0.0.1:{rolegate_port}")
        script = front(tmp, port, upstream, lean_port or rolegate_port)
        return ["sh", "-c", f"{' '.join(map(_quote, serve))} & exec {script}"]
    return cmd


def _quote(arg: str) -> str:
    import shlex
    return shlex.quote(arg)


def nginx_auth_front(tmp: Path, port: int, upstream: str, rolegate_port: int) -> str:
    """nginx ``auth_request`` as deploy/nginx/rolegate-forward-auth.conf sets it up (kept-alive upstreams)."""
    host = upstream.removeprefix("http://")
    body = f"""upstream app {{ server {host}; keepalive 64; }}
  upstream rolegate {{ server 127.0.0.1:{rolegate_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location = /_rolegate_auth {{
      internal;
      proxy_pass http://rolegate/.rolegate/auth;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Uri "";
      proxy_set_header X-Forwarded-Method "";
      proxy_set_header X-Envoy-Original-Path "";
    }}
    location / {{
      auth_request /_rolegate_auth;
      auth_request_set $rolegate_user $upstream_http_x_rolegate_user;
      proxy_set_header X-Rolegate-User $rolegate_user;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://app;
    }}
  }}"""
    return " ".join(map(_quote, _nginx(tmp, body)))


def nginx_auth_ceiling_cmd(tmp: Path, port: int, upstream: str) -> list[str]:
    """nginx ``auth_request`` as above, asking a second server of the same nginx that answers 200 at once: what
    nginx's own subrequest costs, so the most any forward-auth server behind it could reach."""
    auth_port = free_port()
    script = nginx_auth_front(tmp, port, upstream, auth_port)
    conf = tmp / "nginx.conf"
    text = conf.read_text()
    marker = "  server {"
    assert text.count(marker) == 1
    conf.write_text(text.replace(marker, f"  server {{ listen 127.0.0.1:{auth_port}; location / {{ return 200; }} }}\n"
                                         + marker))
    import shlex
    return shlex.split(script)


def nginx_auth_python_floor_cmd(tmp: Path, port: int, upstream: str) -> list[str]:
    """nginx ``auth_request`` as above, asking bench/_floor.py: a Python asyncio protocol (uvloop) that answers
    every subrequest 200 without parsing or deciding anything: the most a forward-auth server written in Python
    could reach behind nginx on this machine."""
    auth_port = free_port()
    script = nginx_auth_front(tmp, port, upstream, auth_port)
    floor = [PYTHON, str(BENCH / "_floor.py"), str(auth_port)]
    return ["sh", "-c", f"{' '.join(map(_quote, floor))} & exec {script}"]


def caddy_auth_front(tmp: Path, port: int, upstream: str, rolegate_port: int) -> str:
    """Caddy ``forward_auth`` as deploy/caddy/Caddyfile sets it up."""
    host = upstream.removeprefix("http://")
    caddyfile = tmp / "Caddyfile"
    caddyfile.write_text(f"""{{
	admin off
	auto_https off
}}
http://127.0.0.1:{port} {{
	route {{
		request_header -X-Rolegate-User
		request_header -X-Rolegate-Email
		request_header -X-Rolegate-Groups
		forward_auth 127.0.0.1:{rolegate_port} {{
			uri /.rolegate/auth
			header_up -X-Original-URI
			header_up -X-Original-Method
			header_up -X-Envoy-Original-Path
			copy_headers X-Rolegate-User X-Rolegate-Email X-Rolegate-Groups
		}}
		reverse_proxy {host}
	}}
}}
""")
    return f"env HOME={_quote(str(tmp))} XDG_DATA_HOME={_quote(str(tmp))} XDG_CONFIG_HOME={_quote(str(tmp))} " \
           f"caddy run --config {_quote(str(caddyfile))} --adapter caddyfile"


def caddy_proxy_cmd(tmp: Path, port: int, upstream: str) -> list[str]:
    """Caddy ``reverse_proxy`` alone: the anchor of the Caddy forward-auth row."""
    host = upstream.removeprefix("http://")
    caddyfile = tmp / "Caddyfile"
    caddyfile.write_text(f"{{\n\tadmin off\n\tauto_https off\n}}\n"
                         f"http://127.0.0.1:{port} {{\n\treverse_proxy {host}\n}}\n")
    return ["env", f"HOME={tmp}", f"XDG_DATA_HOME={tmp}", f"XDG_CONFIG_HOME={tmp}",
            "caddy", "run", "--config", str(caddyfile), "--adapter", "caddyfile"]


@dataclass
class Target:
    name: str
    command: Callable[[Path, int, str], list[str]]
    workers: int = 1
    cpus: str = SERVER_CPUS
    is_upstream: bool = False
    note: str = ""
    session: bool = False  # requests carry a signed-in session cookie
    # What the requests carry when ``session``: "sso" (a session cookie), "daypass" (a day-pass session
    # cookie, the pass bound at building:a) or "bearer" (a rolegate access token of the SSO session).
    credential: str = "sso"
    path: str = PATH       # what wrk requests
    method: str = "GET"  # wrk's request method (POST rows send WRITE_BODY)
    port: int = field(default_factory=free_port)
    # Rows with the same ``group`` are measured interleaved (A B C, C B A, ...) with all their servers up,
    # so their ratios compare the rows, not the machine's drift between one row and the next; rows with
    # the same ``shared`` name (identical config) also run on ONE server: then not even two processes differ.
    group: str | None = None
    shared: str | None = None


def default_targets(workers2: bool) -> list[Target]:
    targets = [
        Target("upstream (nginx return)", upstream_cmd, is_upstream=True),
        # Forward-auth (issue 21): nginx / Caddy in front, asking rolegate about every request, measured
        # side by side with the same front proxying alone.
        Target("nginx proxy_pass", nginx_proxy_cmd, group="front"),
        Target("nginx auth_request -> rolegate, SSO", _rolegate_and(nginx_auth_front, "nginx"), session=True,
               group="front", shared="nginx-fa", note="1 rolegate worker + nginx on one core"),
        Target("nginx auth_request -> rolegate, day pass", _rolegate_and(nginx_auth_front, "nginx"), session=True,
               credential="daypass", path=SITE_PATH, group="front", shared="nginx-fa"),
        Target("nginx auth_request -> lean listener, SSO", _rolegate_and(nginx_auth_front, "nginx", lean=True),
               session=True, group="front", shared="nginx-lean", note="server.forward_auth.listen"),
        Target("nginx auth_request -> lean listener, day pass", _rolegate_and(nginx_auth_front, "nginx", lean=True),
               session=True, credential="daypass", path=SITE_PATH, group="front", shared="nginx-lean"),
        Target("nginx auth_request -> nginx return 200", nginx_auth_ceiling_cmd, group="front",
               note="the ceiling: a forward-auth answer that costs nothing"),
        Target("nginx auth_request -> Python floor", nginx_auth_python_floor_cmd, group="front",
               note="bench/_floor.py: a Python protocol answering 200, no parse, no decision"),
        Target("caddy reverse_proxy", caddy_proxy_cmd, group="front"),
        Target("caddy forward_auth -> rolegate, SSO", _rolegate_and(caddy_auth_front, "caddy"), session=True,
               group="front"),
        Target("caddy forward_auth -> lean listener, SSO", _rolegate_and(caddy_auth_front, "caddy", lean=True),
               session=True, group="front"),
        Target("naive aiohttp proxy", naive_cmd(1)),
        Target("rolegate serve, public route", rolegate_serve_cmd(1), session=True, path=PUBLIC_PATH,
               group="rolegate", shared="rolegate"),
        Target("rolegate, authenticated (cookie)", rolegate_serve_cmd(1, "authenticated"), session=True,
               path=AUTH_PATH, group="rolegate", shared="rolegate"),
        Target("rolegate, enforce", rolegate_serve_cmd(1, "enforce"), session=True, group="rolegate",
               shared="rolegate",
               note="assertion minted (cached), allowed reads audited at 1% (config-shape.yaml)"),
        Target("rolegate, enforce, bearer token", rolegate_serve_cmd(1, "enforce"), session=True,
               credential="bearer", group="rolegate", shared="rolegate"),
        Target("rolegate, enforce scoped, SSO", rolegate_serve_cmd(1, "enforce"), session=True, path=SITE_PATH,
               group="rolegate", shared="rolegate"),
        Target("rolegate, enforce scoped, day pass", rolegate_serve_cmd(1, "enforce"), session=True,
               credential="daypass", path=SITE_PATH, group="rolegate", shared="rolegate"),
        Target("rolegate, enforce, no assertion", rolegate_serve_cmd(1, "enforce", assertion=False), session=True,
               group="rolegate"),
        Target("rolegate, enforce, reads unaudited", rolegate_serve_cmd(1, "enforce", audit_reads=False),
               session=True, group="rolegate"),
        Target("rolegate, enforce, every read audited", rolegate_serve_cmd(1, "enforce", read_sample=1.0),
               session=True, group="rolegate", note="audit.reads.sample: 1.0 (the worst case)"),
        # Writes: every POST that passes is recorded before it is forwarded (durable: committed first).
        Target("rolegate, enforce POST, durable", rolegate_serve_cmd(1, "enforce"), session=True, method="POST",
               group="post",
               note="audit.durable_writes: true (event committed before forwarding)"),
        Target("rolegate, enforce POST, not durable", rolegate_serve_cmd(1, "enforce", durable_writes=False),
               session=True, method="POST", group="post"),
    ]
    if workers2:
        # Only 2 cores: a second worker has to share a core with wrk, so this
        # row shows scaling headroom, not a clean per-core figure.
        note = "2 workers on cpus 0,1 (shares a core with wrk)"
        targets += [
            Target("naive aiohttp proxy x2", naive_cmd(2), workers=2, cpus="0,1", note=note),
            Target("rolegate serve x2, public route", rolegate_serve_cmd(2), workers=2, cpus="0,1", note=note,
                   session=True, path=PUBLIC_PATH),
        ]
    return targets


# (label, numerator row, denominator row, goal): the throughput targets of issues 3, 5, 6 and 8.
RATIOS = [
    ("authenticated / public (issue 3)", "rolegate, authenticated (cookie)", "rolegate serve, public route", 0.90),
    ("enforce / authenticated (issue 5)", "rolegate, enforce", "rolegate, authenticated (cookie)", 0.90),
    ("enforce / enforce without assertion (issue 6)", "rolegate, enforce", "rolegate, enforce, no assertion", 0.95),
    ("reads audited at 1% / unaudited (issue 8)", "rolegate, enforce", "rolegate, enforce, reads unaudited", 0.95),
    ("every read audited / unaudited (issue 8, worst case)", "rolegate, enforce, every read audited",
     "rolegate, enforce, reads unaudited", 0.95),
    ("nginx + forward-auth (SSO) / nginx alone (issue 21)", "nginx auth_request -> rolegate, SSO",
     "nginx proxy_pass", 0.50),
    ("nginx + forward-auth (day pass) / nginx alone (issue 21)", "nginx auth_request -> rolegate, day pass",
     "nginx proxy_pass", 0.50),
    ("caddy + forward-auth (SSO) / caddy alone (issue 21)", "caddy forward_auth -> rolegate, SSO",
     "caddy reverse_proxy", 0.50),
    ("nginx + lean listener (SSO) / nginx alone (issue 21)", "nginx auth_request -> lean listener, SSO",
     "nginx proxy_pass", 0.50),
    ("nginx + a free forward-auth answer / nginx alone (the ceiling)", "nginx auth_request -> nginx return 200",
     "nginx proxy_pass", 0.50),
    ("nginx + lean listener (SSO) / nginx + a free answer", "nginx auth_request -> lean listener, SSO",
     "nginx auth_request -> nginx return 200", 0.50),
    ("nginx + the Python floor / nginx alone (what Python can reach)", "nginx auth_request -> Python floor",
     "nginx proxy_pass", 0.50),
    ("nginx + lean listener (SSO) / nginx + the Python floor", "nginx auth_request -> lean listener, SSO",
     "nginx auth_request -> Python floor", 0.50),
    ("nginx + lean listener (day pass) / nginx alone (issue 21)", "nginx auth_request -> lean listener, day pass",
     "nginx proxy_pass", 0.50),
    ("caddy + lean listener (SSO) / caddy alone (issue 21)", "caddy forward_auth -> lean listener, SSO",
     "caddy reverse_proxy", 0.50),
    ("caddy + lean listener (SSO) / nginx alone (issue 21)", "caddy forward_auth -> lean listener, SSO",
     "nginx proxy_pass", 0.50),
    ("caddy + forward-auth (SSO) / nginx alone (issue 21)", "caddy forward_auth -> rolegate, SSO",
     "nginx proxy_pass", 0.50),
    ("enforce day pass / enforce SSO, scoped (issue 21)", "rolegate, enforce scoped, day pass",
     "rolegate, enforce scoped, SSO", 0.90),
    ("enforce bearer token / enforce SSO (issue 21)", "rolegate, enforce, bearer token", "rolegate, enforce", 0.90),
    ("POST durable / POST not durable (issue 8)", "rolegate, enforce POST, durable",
     "rolegate, enforce POST, not durable", 0.85),
]


# -- running -------------------------------------------------------------------------

def stop_session(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM a process started with start_new_session and everything in its group; SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


class Running:
    def __init__(self, target: Target, upstream: str) -> None:
        self.target = target
        self.tmp = Path(tempfile.mkdtemp(prefix="rolegate-bench-"))
        cmd = target.command(self.tmp, target.port, upstream)
        self.log = open(self.tmp / "server.log", "wb")
        # Rows that need two server processes compare them: the same hash seed and no address-space
        # randomisation make two processes of one program lay out their memory alike, so what differs
        # between them is the config, not the luck of a dict's collisions or a page's placement.
        env = _steady.env(PYTHONPATH=str(ROOT / "src"))
        print(f"  start {target.name}: taskset -c {target.cpus} {' '.join(cmd)}", flush=True)
        self.proc = subprocess.Popen(
            [*_steady.prefix(), "taskset", "-c", target.cpus, *cmd], stdout=self.log, stderr=subprocess.STDOUT,
            env=env, start_new_session=True,
        )
        self.headers: list[str] = []
        self.credentials: dict[str, list[str]] = {}  # credential kind -> wrk's -H lines

    def headers_for(self, credential: str) -> list[str]:
        """The request headers of one kind of credential, made once per server (see Target.credential)."""
        found = self.credentials.get(credential)
        if found is None:
            config = self.tmp / "rolegate.yaml"
            if credential == "sso":
                found = [session_cookie(config)]
            elif credential == "daypass":
                found = ["Cookie: " + _credential("daypass", str(config), "building:a")]
            elif credential == "bearer":
                url_file = self.tmp / "rolegate.url"
                url = url_file.read_text() if url_file.exists() else f"http://127.0.0.1:{self.target.port}"
                cookie = self.headers_for("sso")[0].removeprefix("Cookie: ")
                found = ["Authorization: Bearer " + _credential("bearer", url, cookie)]
            else:
                raise ValueError(credential)
            self.credentials[credential] = found
        return found

    def wait_ready(self, timeout: float = 30, path: str | None = None, credential: str | None = None) -> None:
        url = f"http://127.0.0.1:{self.target.port}{path or self.target.path}"
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        if self.target.session:
            self._wait_listening(deadline)
            if credential == "bearer":
                self._wait_answering(deadline)
            self.headers = self.headers_for(credential or self.target.credential)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                req = urllib.request.Request(url, headers=dict(h.split(": ", 1) for h in self.headers))
                with urllib.request.urlopen(req, timeout=2) as r:
                    body = r.read()
                if r.status == 200 and body == PAYLOAD.encode():
                    return
                last = RuntimeError(f"unexpected answer {r.status} {body[:80]!r}")
            except Exception as exc:  # not up yet
                last = exc
            time.sleep(0.1)
        log = (self.tmp / "server.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise SystemExit(f"{self.target.name} did not become ready ({last}).\n{log}\n"
                         f"Next step: run the command above by hand and read its output.")

    def _wait_answering(self, deadline: float) -> None:
        """Until rolegate itself answers (its /readyz), behind a front proxy or not."""
        url_file = self.tmp / "rolegate.url"
        url = url_file.read_text() if url_file.exists() else f"http://127.0.0.1:{self.target.port}"
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # answering (not ready yet, perhaps: the row's own wait sees to that)
            except Exception:  # not up yet
                time.sleep(0.1)

    def _wait_listening(self, deadline: float) -> None:
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.target.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)

    def stop(self) -> None:
        # The whole session: nginx master+worker, forked Python workers.
        stop_session(self.proc, 10)
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNIT[m.group(2)]


def session_cookie(config: Path) -> str:
    """A ``Cookie: ...`` header of a session minted in the target's own Store."""
    out = subprocess.run([PYTHON, str(BENCH / "session_cookie.py"), str(config), "bench-user", "bench"],
                         capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    if out.returncode != 0:
        raise SystemExit(f"could not mint a session cookie:\n{out.stderr}")
    return "Cookie: " + out.stdout.strip()


def _credential(kind: str, *args: str) -> str:
    out = subprocess.run([PYTHON, str(BENCH / "credentials.py"), kind, *args], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    if out.returncode != 0:
        raise SystemExit(f"could not make a {kind} credential:\n{out.stderr}")
    return out.stdout.strip()


WRITE_BODY = '{"status":"done","note":"filter replaced"}'
_POST_SCRIPT = BENCH / "results" / "post.lua"


def _post_script() -> Path:
    _POST_SCRIPT.parent.mkdir(exist_ok=True)
    _POST_SCRIPT.write_text(f"wrk.method = \"POST\"\nwrk.body = '{WRITE_BODY}'\n"
                            "wrk.headers[\"Content-Type\"] = \"application/json\"\n")
    return _POST_SCRIPT


def run_wrk(port: int, duration: int, connections: int, headers: list[str] = (), method: str = "GET",
            path: str = PATH) -> dict:
    script = ["-s", str(_post_script())] if method == "POST" else []
    cmd = ["taskset", "-c", WRK_CPUS, "wrk", "-t1", f"-c{connections}", f"-d{duration}s",
           *[arg for h in headers for arg in ("-H", h)], *script,
           "--latency", f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock_err = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "p50_ms": _ms(lat["50"]),
        "p99_ms": _ms(lat["99"]),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": sock_err.group(1) if sock_err else "",
    }


def _groups(targets: list[Target]) -> list[list[Target]]:
    """Targets in order, those of one ``group`` gathered where the first of them stands."""
    groups: list[list[Target]] = []
    by_name: dict[str, list[Target]] = {}
    for t in targets:
        if t.group is None:
            groups.append([t])
        elif t.group in by_name:
            by_name[t.group].append(t)
        else:
            by_name[t.group] = [t]
            groups.append(by_name[t.group])
    return groups


def measure(target: Target, args, headers: list[str] = ()) -> dict:
    return measure_group([(target, target.port, list(headers))], args)[0]


def measure_group(rows: list[tuple[Target, int, list[str]]], args) -> list[dict]:
    """Measure (target, port, headers) rows interleaved rep by rep, in alternating order (see Target.group)."""
    for target, port, headers in rows:  # warm-up: pools, caches, TCP
        run_wrk(port, 1, args.connections, headers, target.method, target.path)
    runs: dict[str, list[dict]] = {t.name: [] for t, _, _ in rows}
    for rep in range(args.reps):
        # A B C, then C B A, ...: a machine slowing down (or speeding up) during the run favours no row.
        for target, port, headers in (rows if rep % 2 == 0 else rows[::-1]):
            runs[target.name].append(run_wrk(port, args.duration, args.connections, headers, target.method,
                                             target.path))
    return [_summary(target, runs[target.name]) for target, _, _ in rows]


def _summary(target: Target, runs: list[dict]) -> dict:
    median = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
    print(f"    {target.name}: " + ", ".join(f"{r['rps']:.0f}" for r in runs) + " req/s", flush=True)
    return {"target": target.name, "workers": target.workers, "cpus": target.cpus, "note": target.note,
            "runs": runs, **{k: median[k] for k in ("rps", "p50_ms", "p99_ms")},
            "errors": sum(r["non_2xx"] for r in runs), "rps_all": [r["rps"] for r in runs],
            "rps_stdev": statistics.pstdev(r["rps"] for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--only", default="", help="comma-separated target names (substring match)")
    parser.add_argument("--workers2", action="store_true", help="add 2-worker rows for the Python proxies")
    args = parser.parse_args()
    for tool in ("wrk", "nginx", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found. Next step: apt-get install {tool if tool != 'taskset' else 'util-linux'}")

    targets = default_targets(args.workers2)
    upstream_target = next(t for t in targets if t.is_upstream)
    upstream_url = f"http://127.0.0.1:{upstream_target.port}"
    only = [s.strip().lower() for s in args.only.split(",") if s.strip()]

    print(f"rolegate bench: wrk -t1 -c{args.connections} -d{args.duration}s x{args.reps} (median), "
          f"servers on cpu {SERVER_CPUS}, wrk on cpu {WRK_CPUS}, {len(PAYLOAD)}-byte JSON", flush=True)
    results = []
    upstream = Running(upstream_target, upstream_url)
    try:
        upstream.wait_ready()
        chosen = [t for t in targets
                  if t.is_upstream or not only or any(o in t.name.lower() for o in only)]
        for group in _groups(chosen):
            if group[0].is_upstream:
                results.append(measure(group[0], args))
                continue
            servers: dict[str, Running] = {}
            try:
                rows = []
                for target in group:
                    key = target.shared or target.name
                    running = servers.get(key)
                    if running is None:
                        running = servers[key] = Running(target, upstream_url)
                    running.wait_ready(path=target.path, credential=target.credential)
                    rows.append((target, running.target.port, list(running.headers)))
                # A pass issued for a later row moved the permission version: a bearer token minted
                # before it would be told to refresh (401). Bearer tokens are minted last.
                for i, (target, port, _headers) in enumerate(rows):
                    if target.credential == "bearer":
                        running = servers[target.shared or target.name]
                        running.credentials.pop("bearer", None)
                        running.wait_ready(path=target.path, credential="bearer")
                        rows[i] = (target, port, list(running.headers))
                results.extend(measure_group(rows, args))
            finally:
                for running in servers.values():
                    running.stop()
    finally:
        upstream.stop()

    by_name = {r["target"]: r for r in results}
    naive = by_name.get("naive aiohttp proxy")
    up = by_name.get(upstream_target.name)
    for r in results:
        r["vs_naive"] = r["rps"] / naive["rps"] if naive else None
        r["vs_upstream"] = r["rps"] / up["rps"] if up else None

    nginx = by_name.get("nginx proxy_pass")
    header = (f"{'target':<42} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs naive':>9} {'vs upstream':>12}"
              f" {'vs nginx':>9}")
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        vn = f"{r['vs_naive']:.2f}x" if r["vs_naive"] else "-"
        vu = f"{r['vs_upstream']:.2f}x" if r["vs_upstream"] else "-"
        flag = f"  ({r['errors']} non-2xx!)" if r["errors"] else ""
        vx = f"{r['rps'] / nginx['rps']:.2f}x" if nginx else "-"
        print(f"{r['target']:<42} {r['rps']:>9.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {vn:>9} {vu:>12} {vx:>9}"
              f"{flag}")

    # The issues' targets, as ratios of rows measured in this run (each row's median).
    ratios = []
    group_of = {t.name: t.group for t in targets}
    for label, num, den, goal in RATIOS:
        if num in by_name and den in by_name:
            a, b = by_name[num]["rps_all"], by_name[den]["rps_all"]
            if group_of.get(num) is not None and group_of.get(num) == group_of.get(den) and len(a) == len(b):
                # Measured side by side: the median of the per-rep ratios, each taken from two runs
                # moments apart, is steadier than a ratio of medians.
                value, how = statistics.median(x / y for x, y in zip(a, b)), "median of per-rep ratios"
            else:
                value, how = by_name[num]["rps"] / by_name[den]["rps"], "ratio of medians"
            ratios.append({"target": label, "ratio": value, "goal": goal, "met": value >= goal, "how": how})
    if ratios:
        print()
        for r in ratios:
            print(f"{r['target']:<58} {r['ratio']:6.2f}  (goal >= {r['goal']:.2f}: {'met' if r['met'] else 'NOT met'};"
                  f" {r['how']})")

    out_dir = BENCH / "results"
    out_dir.mkdir(exist_ok=True)
    meta = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "duration_s": args.duration, "reps": args.reps,
            "connections": args.connections, "payload_bytes": len(PAYLOAD), "path": PATH,
            "server_cpus": SERVER_CPUS, "wrk_cpus": WRK_CPUS, "python": sys.version.split()[0]}
    (out_dir / "latest.json").write_text(json.dumps({"meta": meta, "results": results, "ratios": ratios}, indent=2))
    print(f"\nwrote {out_dir / 'latest.json'}")


if __name__ == "__main__":
    main()

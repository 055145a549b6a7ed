"""Several real ``rolegate serve`` instances on one PostgreSQL database and one Redis prefix.

Each instance is its own process tree (master + workers) on its own port with its own internal
listener. By default every instance names the database with a different ``application_name``, so
each gets its own version board (the board file is keyed by the storage URL): the instances then
share nothing but PostgreSQL and Redis, exactly like instances on separate machines.

Measured figures are printed (``pytest -s`` shows them); nothing is written into the repository.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from rolegate_lab import free_port, idp_login, rolegate_client
from rolegate_lab.idp import POST_LOGOUT_PATHS
from tests.support.private_services import PrivatePostgres, PrivateRedis
from tests.support.serve import RolegateProcess
from tests.support.workers import owner_of

REDIS_URL = os.environ.get("ROLEGATE_TEST_REDIS", "redis://127.0.0.1:6379/0")
SESSION_SECRET = "scale-out-shared-session-secret-" + "s" * 32
KEY_SECRET = "scale-out-shared-key-secret-" + "k" * 32
HTML = {"Accept": "text/html"}
JSON = {"Accept": "application/json"}
PEOPLE = "ou=people,dc=example,dc=com"
GROUPS = "ou=groups,dc=example,dc=com"
# docs/configuration.md: "other processes and instances are picked up from the Store within 0.5 s" (STORE_POLL_SECONDS);
# a little margin for a loaded machine, as tests/test_end_to_end.py allows.
STORE_POLL_BOUND = 0.5 + 0.3


@dataclass(frozen=True)
class Backend:
    """Where a fleet keeps its state: a PostgreSQL database, a Redis server, a key prefix there. ``postgres``
    and ``redis`` are set when the servers are the test's own (private_services), which it may stop."""

    db_url: str
    redis_url: str
    prefix: str
    postgres: PrivatePostgres | None = None
    redis: PrivateRedis | None = None


def directory_section(slapd: Any, **changes: Any) -> dict[str, Any]:
    """A ``directory:`` config section for a lab slapd (fast incremental syncs for tests)."""
    return {
        "url": slapd.url,
        "bind_dn": slapd.service_dn,
        "bind_password": slapd.service_password,
        "users": {"base": PEOPLE, "disabled_filter": "(employeeType=disabled)"},
        "groups": {"base": GROUPS},
        "page_size": 100,
        "timeout": "5s",
        "connect_timeout": "2s",
        "interval": "1s",
        "full_interval": "1h",
        **changes,
    }


class Fleet:
    """N instances: ports reserved up front so the IdP can list every callback."""

    def __init__(
        self, workdir: Path, backend: Backend, count: int, *, workers: int = 1, separate_boards: bool = True
    ) -> None:
        self.workdir = Path(workdir)
        self.backend = backend
        self.db_url = backend.db_url
        self.redis_url = backend.redis_url
        self.prefix = backend.prefix
        self.count = count
        self.workers = workers
        self.separate_boards = separate_boards
        self.ports = [free_port() for _ in range(count)]
        self.procs: list[RolegateProcess] = []

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    def client(self) -> dict[str, Any]:
        """The IdP client ``rolegate`` with every instance's callback and post-logout URIs."""
        urls = self.urls
        return rolegate_client(
            urls[0],
            redirect_uris=[f"{u}/.rolegate/callback" for u in urls],
            post_logout_redirect_uris=[f"{u}{p}" for u in urls for p in POST_LOGOUT_PATHS],
        )

    def storage_url(self, index: int) -> str:
        if not self.separate_boards:
            return self.db_url
        return f"{self.db_url}?application_name=rolegate-i{index}"

    def storage(self, index: int = 0, **extra: Any) -> dict[str, Any]:
        return {
            "url": self.storage_url(index),
            "cache_url": self.redis_url,
            "cache_prefix": self.prefix,
            "connect_timeout": "1s",
            "command_timeout": "5s",
            "pool_size": 4,
            **extra,
        }

    def config(
        self,
        index: int,
        idp: Any,
        backend_url: str,
        *,
        directory: dict[str, Any] | None = None,
        storage: dict[str, Any] | None = None,
        **sections: Any,
    ) -> dict[str, Any]:
        url = self.urls[index]
        config: dict[str, Any] = {
            "server": {
                "listen": f"127.0.0.1:{self.ports[index]}",
                "public_url": url,
                "internal_listen": "127.0.0.1:0",
                "workers": self.workers,
            },
            "storage": self.storage(index, **(storage or {})),
            "session": {"secret": SESSION_SECRET},
            "tokens": {"key_secret": KEY_SECRET},
            "oidc": {
                "issuer": idp.issuer,
                "client_id": "rolegate",
                "client_secret": idp.client()["client_secret"],
                "scopes": ["openid", "profile", "email", "groups"],
                "algorithms": ["ES256", "RS256"],
            },
            "permissions": ["notes:view", "notes:edit"],
            "roles": {
                "reader": {"permissions": ["notes:view"]},
                "writer": {"permissions": ["notes:view", "notes:edit"]},
            },
            "bindings": [{"group": "admins", "role": "writer"}],
            "upstreams": {"app": {"url": backend_url, "connect_timeout": "2s", "timeout": "10s"}},
            "routes": [
                {"path": "/api/**", "methods": ["GET"], "permission": "notes:view", "upstream": "app"},
                {"path": "/api/**", "methods": ["POST", "PUT"], "permission": "notes:edit", "upstream": "app"},
            ],
            "audit": {"sinks": ["store"], "reads": {"sample": 0.0}},
        }
        if directory is not None:
            config["directory"] = directory
        for name, section in sections.items():
            config[name] = section
        return config

    def prepare(self, configs: list[dict[str, Any]]) -> None:
        """Write each instance's config; run ``rolegate migrate -c`` once (as a deploy's init job would)."""
        self.procs = [RolegateProcess(c, self.workdir / f"instance{i}") for i, c in enumerate(configs)]
        result = subprocess.run(
            [sys.executable, "-m", "rolegate", "migrate", "-c", str(self.procs[0].config_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr

    def start(self, configs: list[dict[str, Any]]) -> "Fleet":
        """Start every instance at the same time (they race for keys, migrations done, the directory lock)."""
        from concurrent.futures import ThreadPoolExecutor

        self.prepare(configs)
        with ThreadPoolExecutor(len(self.procs)) as pool:
            for future in [pool.submit(p.start, 90) for p in self.procs]:
                future.result()
        return self

    def stop(self) -> None:
        for proc in self.procs:
            try:
                proc.stop()
            except Exception:  # noqa: BLE001 - stop the others regardless
                pass

    def log(self) -> str:
        return "\n".join(f"--- instance {i} ---\n{p.log()}" for i, p in enumerate(self.procs))


def readyz(proc: RolegateProcess) -> tuple[int, dict[str, Any]]:
    try:
        status, body = proc.readyz()
    except (OSError, urllib.error.URLError) as exc:
        return 0, {"error": str(exc)}
    try:
        return status, json.loads(body)
    except ValueError:
        return status, {"raw": body}


def kill_tree(proc: RolegateProcess) -> None:
    """SIGKILL an instance's master and every worker at once (a host that vanished)."""
    assert proc.proc is not None
    pids = [proc.proc.pid, *proc.worker_pids()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.proc.wait(10)
    # The spawned workers are reparented; make sure they are gone before going on.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() and _alive(p) for p in pids):
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def sign_in(http: aiohttp.ClientSession, base: str, username: str, password: str = "demo") -> str:
    """Sign in through the lab IdP on instance ``base``; returns the ``Cookie`` header of the session."""
    async with http.get(f"{base}/.rolegate/login", params={"rd": "/"}, headers=HTML, allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        location = resp.headers["Location"]
    callback = await idp_login(http, location, username, password)
    async with http.get(callback.url, headers=HTML, allow_redirects=False) as resp:
        assert resp.status == 302, f"callback answered {resp.status}: {await resp.text()}"
        cookies = [m for m in resp.cookies.values() if m.value]
    assert cookies, "the callback set no session cookie"
    return "; ".join(f"{m.key}={m.value}" for m in cookies)


async def status_of(
    http: aiohttp.ClientSession, url: str, cookie: str | None, method: str = "GET", **kwargs: Any
) -> int:
    headers = {**JSON, **({"Cookie": cookie} if cookie else {})}
    async with http.request(method, url, headers=headers, allow_redirects=False, **kwargs) as resp:
        await resp.read()
        return resp.status


async def poll_until(check: Callable[[], Any], timeout: float, interval: float = 0.02) -> tuple[bool, float]:
    """Await ``check()`` until truthy or ``timeout``; (ok, seconds it took)."""
    import asyncio

    started = time.monotonic()
    while True:
        if await check():
            return True, time.monotonic() - started
        if time.monotonic() - started > timeout:
            return False, time.monotonic() - started
        await asyncio.sleep(interval)


def report(line: str) -> None:
    """Measured figures go to stdout (``pytest -s`` shows them), never into a file in the repository."""
    print(line, flush=True)


async def bodies_on_every_worker(
    proc: RolegateProcess, url: str, *, each: int = 2, attempts: int = 80
) -> list[tuple[int, int, bytes]]:
    """GET ``url`` on fresh connections until every worker of ``proc`` has answered ``each`` times;
    every (worker pid, status, body) seen, in order. tests/support/workers.py's ``on_every_worker``, for
    answers whose body matters (it reads only the status)."""
    import asyncio

    workers = proc.worker_pids()
    assert workers, "no worker processes"
    parts = urllib.parse.urlsplit(url)
    seen: list[tuple[int, int, bytes]] = []
    counts: Counter[int] = Counter()
    for _ in range(attempts):
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            writer.write(f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode("latin-1"))
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
            # Keep-alive: the server side of this connection is still among the answering worker's fds.
            pid = owner_of(writer.get_extra_info("sockname")[1], workers, writer.get_extra_info("peername")[1])
            lines = head.decode("latin-1").split("\r\n")
            fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
            body = await asyncio.wait_for(reader.readexactly(int(fields.get("content-length", "0"))), 15)
        finally:
            writer.close()
        assert pid is not None, "no worker holds the connection"
        seen.append((pid, int(lines[0].split()[1]), body))
        counts[pid] += 1
        if all(counts[w] >= each for w in workers):
            return seen
    raise AssertionError(f"not every worker answered in {attempts} fresh connections: {dict(counts)} of {workers}")

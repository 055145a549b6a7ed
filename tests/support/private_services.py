"""A PostgreSQL cluster and a Redis server of one test's own, for tests that stop, restart or fill them.

The machine's PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379, see ``scripts/services.sh``) serve
every other test running on this machine at the same moment. A test that takes a database away, or fills
it, takes away its own: ``private_postgres()`` makes a cluster with the Debian binaries
(``/usr/lib/postgresql/<version>/bin``, whichever version is installed) in a temporary directory, listening
on a free 127.0.0.1 port with its unix socket in that directory; ``private_redis()`` runs ``redis-server``
on a free port with no persistence. Both are stopped and their directories removed when the ``with`` ends,
whatever the test did to them meanwhile.

Nothing here imports pytest; nothing is written outside the temporary directories.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from glob import glob
from pathlib import Path

from rolegate_lab.ports import free_port

# A port may be taken by someone else between free_port() and the server binding it: try a new one.
START_ATTEMPTS = 3


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian layout), or the one on PATH; None: none."""
    found = [
        Path(d)
        for d in glob("/usr/lib/postgresql/*/bin")
        if (Path(d) / "initdb").is_file() and (Path(d) / "pg_ctl").is_file()
    ]
    if found:
        return max(found, key=lambda d: [int(p) for p in re.findall(r"\d+", d.parent.name)] or [0])
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).parent
    return None


def missing() -> str | None:
    """Why private services cannot run here (for a skip reason), or None when they can."""
    if postgres_bin() is None:
        return "no PostgreSQL server binaries (initdb, pg_ctl) installed"
    if shutil.which("redis-server") is None:
        return "no redis-server installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run PostgreSQL as"
    return None


class PrivatePostgres:
    """One PostgreSQL cluster in a temporary directory; ``url`` is its ``postgres`` database (trust auth).

    PostgreSQL refuses to run as root: when the tests do, the cluster belongs to the ``postgres`` user.
    ``fsync`` is off: these tests stop the server cleanly or kill processes, never the machine, and the
    disk is shared with everyone else's runs.
    """

    def __init__(self) -> None:
        bin_dir = postgres_bin()
        if bin_dir is None:
            raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl) installed")
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="rolegate-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "server.log"
        self.port = 0
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = "postgres"
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
            timeout=120,
        )

    def _run(self, tool: str, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(self.bin / tool), *args],
            cwd=self.root,
            user=self._user,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}\n{self.log()[-2000:]}"
            )
        return done

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def _configure(self, port: int) -> None:
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(port),
            "unix_socket_directories": f"'{self.root}'",
            "fsync": "off",
            "full_page_writes": "off",
            "shared_buffers": "16MB",
            "max_connections": "100",
        }
        # postgresql.auto.conf is read last: these win over whatever initdb wrote.
        text = "".join(f"{k} = {v}\n" for k, v in settings.items())
        (self.data / "postgresql.auto.conf").write_text(text)

    def start(self) -> "PrivatePostgres":
        """Start (again); the first start picks a free port, later starts reuse it (clients keep their URL)."""
        attempts = START_ATTEMPTS if self.port == 0 else 1
        for attempt in range(attempts):
            if self.port == 0 or attempt:
                self.port = free_port()
                self._configure(self.port)
            done = self._run(
                "pg_ctl",
                "-D",
                str(self.data),
                "-l",
                str(self.logfile),
                "-w",
                "-t",
                "60",
                "start",
                timeout=90,
                check=False,
            )
            if done.returncode == 0 and self.is_up():
                return self
        raise RuntimeError(f"private PostgreSQL did not start on port {self.port}:\n{self.log()[-3000:]}")

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast`` (clients are disconnected, the server shuts down cleanly)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", timeout=90)

    def is_up(self) -> bool:
        done = self._run("pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port), timeout=10, check=False)
        return done.returncode == 0

    def close(self) -> None:
        """Stop the server if it runs (immediately: it is thrown away) and remove its directory."""
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(
                    "pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "60", "stop", timeout=90, check=False
                )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """One ``redis-server`` on a free 127.0.0.1 port, no RDB/AOF persistence, its files in a temporary
    directory; the child process is this object's own (stopped with SIGTERM, never a broad kill)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rolegate-redis-"))
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def log(self) -> str:
        try:
            return (self.root / "redis.log").read_text(errors="replace")
        except OSError:
            return ""

    def start(self) -> "PrivateRedis":
        """Start (again); the first start picks a free port, later starts reuse it."""
        attempts = START_ATTEMPTS if self.port == 0 else 1
        for attempt in range(attempts):
            if self.port == 0 or attempt:
                self.port = free_port()
            self.proc = subprocess.Popen(
                [
                    "redis-server",
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.root),
                    "--logfile",
                    str(self.root / "redis.log"),
                    "--daemonize",
                    "no",
                ],
                cwd=self.root,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self.is_up():
                    return self
                time.sleep(0.05)
            self._end()
        raise RuntimeError(f"private redis-server did not start on port {self.port}:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        """Shut the server down (SIGTERM: no save, persistence is off) and wait until it is gone."""
        self._end()

    def _end(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def is_up(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def close(self) -> None:
        try:
            self._end()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started PostgreSQL cluster of the caller's own; stopped and removed afterwards."""
    server = PrivatePostgres()
    try:
        yield server.start()
    finally:
        server.close()


@contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    """A started Redis of the caller's own; stopped and removed afterwards."""
    server = PrivateRedis()
    try:
        yield server.start()
    finally:
        server.close()

"""Run ``rolegate serve`` as a real subprocess for tests: start, wait until ready, signal, stop."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import yaml

_SERVING = re.compile(r"serving http://[^:]+:(\d+) with (\d+) worker\(s\)(?:; internal listener on port (\d+))?")


class RolegateProcess:
    """``rolegate serve -c <config>`` in a child process; ``url`` and ``internal_url`` once started."""

    def __init__(self, config: dict | str, workdir: Path, *, env: dict[str, str] | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "rolegate.yaml"
        self.write_config(config)
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.internal_port: int | None = None
        self.output: list[str] = []
        self._reader: threading.Thread | None = None
        self._ready = threading.Event()

    def write_config(self, config: dict | str) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.config_path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def internal_url(self) -> str:
        return f"http://127.0.0.1:{self.internal_port}"

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            m = _SERVING.search(line)
            if m:
                self.port = int(m.group(1))
                self.internal_port = int(m.group(3)) if m.group(3) else None
                self._ready.set()

    def start(self, timeout: float = 60) -> "RolegateProcess":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rolegate", "serve", "-c", str(self.config_path)],
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("rolegate serve did not start:\n" + self.log())
        return self

    def log(self) -> str:
        """Everything the process printed so far (a check for a line must use ``wait_for_log``)."""
        return "".join(self.output)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        pids = [int(p) for p in out.split()]
        # multiprocessing's spawn uses a resource tracker child too; workers run rolegate's worker_main.
        return [p for p in pids if _is_worker(p)]

    def readyz(self) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.internal_url + "/readyz", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait_for_log(self, needle: str, timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(needle in line for line in self.output):
                return True
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 20) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._reader is not None:
            self._reader.join(2)
        return self.proc.returncode

    def __enter__(self) -> "RolegateProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _is_worker(pid: int) -> bool:
    try:
        return "resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    except OSError:  # exited since pgrep listed it
        return False


def minimal_config(upstream_url: str, **server: object) -> dict:
    """A small valid config with a public, an authenticated and an enforce route."""
    return {
        "server": {
            "listen": "127.0.0.1:0",
            "public_url": "http://127.0.0.1:8080",
            "internal_listen": "127.0.0.1:0",
            "workers": 1,
            **server,
        },
        "permissions": ["workorders:view"],
        "upstreams": {"app": {"url": upstream_url, "connect_timeout": "2s", "timeout": "5s"}},
        "routes": [
            {"path": "/public/**", "mode": "public", "upstream": "app"},
            {"path": "/slow", "mode": "public", "upstream": "app"},
            {"path": "/upload", "methods": ["POST"], "mode": "public", "upstream": "app"},
            {"path": "/ws", "mode": "public", "upstream": "app"},
            {"path": "/sse", "mode": "public", "upstream": "app"},
            {"path": "/chunked", "mode": "public", "upstream": "app"},
            {"path": "/download", "mode": "public", "upstream": "app"},
            {"path": "/workorders/**", "mode": "authenticated", "upstream": "app"},
            {"path": "/admin/**", "permission": "workorders:view", "upstream": "app"},
        ],
    }

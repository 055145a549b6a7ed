"""A lab component run as a child process: start, wait until ready, stop, kill."""
from __future__ import annotations

import atexit
import os
import signal
import subprocess
import time
import weakref
from pathlib import Path
from typing import IO, Any

from .errors import LabError
from .ports import free_port

# Components still running when the interpreter exits are stopped, so a crashed
# test run does not leave slapd or node processes behind.
_LIVE: "weakref.WeakSet[LabProcess]" = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for component in list(_LIVE):
        try:
            component.stop()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


class LabProcess:
    """Base class: a child process listening on a free port of 127.0.0.1.

    Subclasses give the command line (``_command``), a readiness probe
    (``_is_ready``) and optionally ``_before_start`` / ``_after_ready`` hooks.
    """

    name = "component"
    start_timeout = 15.0
    #: how many fresh ports to try when the chosen one was taken meanwhile
    port_attempts = 3

    def __init__(self, workdir: Path, *, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._fixed_port = port is not None
        self.port: int = port if port is not None else free_port()
        self.log_path = self.workdir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- to override -------------------------------------------------------
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str] | None:
        return None

    def _cwd(self) -> Path:
        return self.workdir

    def _is_ready(self) -> bool:
        raise NotImplementedError

    def _before_start(self) -> None:
        """Prepare files before the first spawn (called on every start)."""

    def _after_ready(self) -> None:
        """Runs once the process answers (e.g. seeding)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle -----------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> "LabProcess":
        """Start the process and block until it is ready; raise LabError with the log tail if not."""
        if self.running:
            return self
        for attempt in range(self.port_attempts):
            self._before_start()
            self._spawn()
            outcome = self._wait_ready()
            if outcome == "ready":
                break
            taken = "in use" in log_tail(self.log_path, 15).lower()
            self._terminate()
            if outcome == "exited" and taken and not self._fixed_port and attempt + 1 < self.port_attempts:
                self.port = free_port()  # lost the race for the port: pick another
                continue
            why = "exited early" if outcome == "exited" else f"was not ready within {self.start_timeout:.0f}s"
            raise LabError(
                f"{self.name} {why} (port {self.port}, log {self.log_path}):\n{log_tail(self.log_path)}"
            )
        _LIVE.add(self)
        try:
            self._after_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self) -> None:
        self._log = open(self.log_path, "ab")
        self._log.write(f"\n=== {time.strftime('%H:%M:%S')} starting {self.name} on port {self.port}\n".encode())
        self._log.flush()
        env = self._env()
        self._proc = subprocess.Popen(
            self._command(),
            cwd=self._cwd(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=None if env is None else {**os.environ, **env},
            # own process group: a Ctrl-C aimed at pytest does not hit the child first
            start_new_session=True,
        )

    def _wait_ready(self) -> str:
        deadline = time.monotonic() + self.start_timeout
        delay = 0.01
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return "exited"
            try:
                if self._is_ready():
                    return "ready"
            except Exception:  # noqa: BLE001 - not ready yet, whatever the probe says
                pass
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)
        return "timeout"

    def _terminate(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(sig)
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        """Stop gracefully (SIGTERM, then SIGKILL after 5 s). Safe to call twice."""
        self._terminate(signal.SIGTERM)
        _LIVE.discard(self)

    def kill(self) -> None:
        """SIGKILL the process at once, as a crash would."""
        self._terminate(signal.SIGKILL)
        _LIVE.discard(self)

    def restart(self) -> "LabProcess":
        """Stop and start again on the same port with the same data."""
        self.stop()
        self._fixed_port = True
        return self.start()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.url} {state}>"

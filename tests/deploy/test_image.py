"""The container image, built and run with podman as an operator would: no registry is needed.

The base is a Debian rootfs made with ``mmdebstrap`` (python3 and its venv module) and imported into
podman; ``deploy/docker/Dockerfile`` is built on it with ``--build-arg BASE=…`` and ``--format docker``
(podman's default OCI format drops HEALTHCHECK). Then, as docs/operations.md's "Container image" shows: ``--help``
and ``check`` on both seed examples, and ``serve`` with the documented ``run`` line and a minimal config
that names no ``storage.url``: ``/readyz`` is 200 only once the proxy port answers, a protected route is
401, the HEALTHCHECK is healthy, and ``podman stop`` drains and exits 0.

Everything podman keeps (its storage, the base tarball, images) lives in ``$ROLEGATE_IMAGE_CACHE``
(default ``~/.cache/rolegate-image``), outside the repository: a rerun imports nothing and rebuilds only
when the Dockerfile, pyproject.toml, README.md or src/ changed (the image is tagged with their hash).
Without podman, mmdebstrap or root this test says why it did not run; on CI (``CI=true``) that is a failure.
HTTPS during the build trusts the host's CA bundle, mounted for the build only (never in the image).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from rolegate_lab.ports import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("ROLEGATE_IMAGE_CACHE") or Path.home() / ".cache" / "rolegate-image")
BASE = "localhost/rolegate-base:bookworm"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
MIRROR = "http://deb.debian.org/debian"


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "the image test needs root (podman with vfs storage and mmdebstrap here run as root)"
    for tool in ("podman", "mmdebstrap", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/setup.sh installs podman, buildah, runc and mmdebstrap)"
    return None


def _podman_env() -> dict[str, str]:
    """podman as this machine kind needs it: runc (crun refuses hybrid cgroups), rlimits within the
    hard limits, vfs storage in the cache folder."""
    import resource

    CACHE.mkdir(parents=True, exist_ok=True)
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], int(Path("/proc/sys/kernel/pid_max").read_text()))
    conf = CACHE / "containers.conf"
    conf.write_text(
        f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
    )
    storage = CACHE / "storage.conf"
    storage.write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{CACHE / "storage"}"\nrunroot = "{CACHE / "run"}"\n')
    return {**os.environ, "CONTAINERS_CONF": str(conf), "CONTAINERS_STORAGE_CONF": str(storage)}


def _run(env: dict[str, str], *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def _source_hash() -> str:
    digest = hashlib.sha256()
    files = [
        ROOT / "deploy/docker/Dockerfile",
        ROOT / "pyproject.toml",
        ROOT / "README.md",
        *sorted(p for p in (ROOT / "src").rglob("*") if p.is_file() and "__pycache__" not in p.parts),
    ]
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


@pytest.fixture(scope="module")
def podman() -> dict[str, str]:
    reason = _why_not()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the image test cannot run on CI: {reason}")
        pytest.skip(reason)
    return _podman_env()


@pytest.fixture(scope="module")
def image(podman: dict[str, str]) -> str:
    if _run(podman, "podman", "image", "exists", BASE, check=False).returncode != 0:
        tarball = CACHE / "bookworm-python3.tar"
        if not tarball.exists():
            partial = CACHE / "bookworm-python3.tar.partial"
            _run(
                podman,
                "mmdebstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "--dpkgopt=path-exclude=/usr/share/doc/*",
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/locale/*",
                "--format=tar",
                "bookworm",
                str(partial),
                MIRROR,
                timeout=900,
            )
            partial.replace(tarball)
        _run(podman, "podman", "import", str(tarball), BASE, timeout=300)
    tag = f"localhost/rolegate:test-{_source_hash()}"
    if _run(podman, "podman", "image", "exists", tag, check=False).returncode != 0:
        # With vfs each image is a full copy: drop the ones built from older sources first.
        listed = _run(podman, "podman", "images", "--format", "{{.Repository}}:{{.Tag}}", "localhost/rolegate")
        stale = [name for name in listed.stdout.split() if name.startswith("localhost/rolegate:test-")]
        if stale:
            _run(podman, "podman", "rmi", "-f", *stale, check=False)
        started = time.monotonic()
        # buildah 1.28 does not read Dockerfile.dockerignore beside the Dockerfile: --ignorefile.
        # --layers=false: with vfs storage every layer is a full copy of the root filesystem.
        _run(
            podman,
            "podman",
            "build",
            "--format",
            "docker",
            "--layers=false",
            "--ignorefile",
            "deploy/docker/Dockerfile.dockerignore",
            "-f",
            "deploy/docker/Dockerfile",
            "--build-arg",
            f"BASE={BASE}",
            "--build-arg",
            "PIP_CERT=/run/host-ca.pem",
            "-v",
            f"{HOST_CA}:/run/host-ca.pem:ro",
            "-t",
            tag,
            str(ROOT),
            timeout=1200,
        )
        print(f"\nimage build: {time.monotonic() - started:.0f} s")
    size = json.loads(_run(podman, "podman", "image", "inspect", tag).stdout)[0]["Size"]
    print(f"\nimage {tag}: {size / 1e6:.0f} MB")
    return tag


def test_the_image_runs_the_cli_and_checks_the_seed_examples(podman, image):
    examples = ROOT / "config" / "examples"
    script = (
        "rolegate --help >/dev/null && rolegate check -c /examples/building-safety.yaml"
        " && rolegate check -c /examples/field-service.yaml && id -u"
    )
    result = _run(
        podman,
        "podman",
        "run",
        "--rm",
        "--network",
        "none",
        "--read-only",
        "--no-healthcheck",
        "-v",
        f"{examples}:/examples:ro",
        "--entrypoint",
        "/bin/sh",
        image,
        "-c",
        script,
    )
    assert result.stdout.strip().splitlines()[-1] == "10001", "the image runs as its own non-root user"


def _get(url: str) -> int | None:
    """The status of a GET, or None when nothing answered with HTTP."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, urllib.error.URLError):
        return None


def test_serve_with_the_documented_run_line(podman, image, tmp_path):
    # A minimal config: no storage section, so the SQLite database goes to ROLEGATE_DATA=/var/lib/rolegate.
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {
                    "listen": "0.0.0.0:8080",
                    "internal_listen": "0.0.0.0:9090",
                    "workers": 2,
                    "public_url": "http://127.0.0.1:8080",
                    "drain_timeout": "5s",
                },
                "upstreams": {"app": {"url": "http://127.0.0.1:9", "connect_timeout": "1s", "timeout": "2s"}},
                "routes": [
                    {"path": "/public/**", "mode": "public", "upstream": "app"},
                    {"path": "/**", "mode": "authenticated", "upstream": "app"},
                ],
            }
        )
    )
    config.chmod(0o644)
    port, internal = free_port(), free_port()
    name, volume = f"rolegate-test-{port}", f"rolegate-test-data-{port}"
    # docs/operations.md's line, with free host ports (127.0.0.1 only), the test's names and the internal port
    # published.
    run = [
        "podman",
        "run",
        "-d",
        "--name",
        name,
        "-p",
        f"127.0.0.1:{port}:8080",
        "-p",
        f"127.0.0.1:{internal}:9090",
        "-v",
        f"{config}:/etc/rolegate/config.yaml:ro",
        "-v",
        f"{volume}:/var/lib/rolegate",
        "--read-only",
        "--tmpfs",
        "/tmp",
        image,
    ]
    try:
        _run(podman, *run)
        up = time.monotonic()
        port_at = ready_at = None
        deadline = up + 90
        while ready_at is None and time.monotonic() < deadline:
            ready = _get(f"http://127.0.0.1:{internal}/readyz") == 200
            answered = _get(f"http://127.0.0.1:{port}/public/x") is not None
            if answered and port_at is None:
                port_at = time.monotonic()
            if ready:
                # Ready means the proxy answers: checked right after /readyz said so.
                assert answered or _get(f"http://127.0.0.1:{port}/public/x") is not None, "ready before the port"
                ready_at = time.monotonic()
            time.sleep(0.05)
        logs = _run(podman, "podman", "logs", name, check=False)
        assert ready_at is not None, f"never ready:\n{logs.stdout}{logs.stderr}"
        print(
            f"\nreadiness: container up -> proxy answers {((port_at or ready_at) - up):.2f} s"
            f" -> /readyz 200 {ready_at - up:.2f} s"
        )
        assert _get(f"http://127.0.0.1:{port}/protected") == 401
        _run(podman, "podman", "healthcheck", "run", name)
        state = json.loads(_run(podman, "podman", "inspect", name).stdout)[0]["State"]
        assert (state.get("Health") or state.get("Healthcheck"))["Status"] == "healthy"
        _run(podman, "podman", "stop", "-t", "20", name, timeout=60)
        state = json.loads(_run(podman, "podman", "inspect", name).stdout)[0]["State"]
        logs = _run(podman, "podman", "logs", name)
        assert state["ExitCode"] == 0, logs.stdout + logs.stderr
        assert "draining workers" in logs.stdout + logs.stderr
        assert "Traceback" not in logs.stdout + logs.stderr
        # The database went to the volume, not beside the read-only config.
        listing = _run(
            podman,
            "podman",
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            f"{volume}:/data:ro",
            "--entrypoint",
            "/bin/ls",
            image,
            "/data",
        )
        assert "rolegate.db" in listing.stdout.split()
    finally:
        _run(podman, "podman", "rm", "-f", name, check=False)
        _run(podman, "podman", "volume", "rm", "-f", volume, check=False)

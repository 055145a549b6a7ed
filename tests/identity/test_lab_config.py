"""config/examples/lab.yaml validates with the variables the lab and quickstart export."""
from __future__ import annotations

from pathlib import Path

from rolegate.config import load_config

LAB_YAML = Path(__file__).resolve().parents[2] / "config" / "examples" / "lab.yaml"


def test_lab_config_loads():
    env = {"ROLEGATE_PUBLIC_URL": "http://127.0.0.1:8080", "ROLEGATE_OIDC_ISSUER": "http://127.0.0.1:9000",
           "ROLEGATE_OIDC_SECRET": "s3cret", "LAB_BACKEND_URL": "http://127.0.0.1:8081",
           "ROLEGATE_SESSION_SECRET": "x" * 48}
    config = load_config(LAB_YAML, env=env)
    assert config.oidc is not None and config.oidc.issuer == "http://127.0.0.1:9000"
    assert config.session is not None and not config.server.secure_cookies
    modes = {r.path: r.mode for r in config.routes}
    assert modes["/public/**"] == "public"
    assert all(modes[p] == "authenticated" for p in ("/workorders/**", "/me-echo/**", "/ws", "/sse"))

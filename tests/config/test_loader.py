"""Config loading: every problem names file, line and key; secrets interpolate; nothing crashes."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rolegate.config import load_config, load_config_text
from rolegate.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

BASE = """\
server:
  listen: 127.0.0.1:0
  public_url: http://127.0.0.1:8080
permissions: [invoices:view, pricing:view]
roles:
  office: {permissions: [invoices:view]}
upstreams:
  app: {url: "http://127.0.0.1:8081", timeout: 30s}
routes:
  - path: /invoices/**
    permission: invoices:view
    upstream: app
"""


def problems_of(text: str, **kw) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, file="c.yaml", **kw)
    return info.value.problems


def test_minimal_config_loads_with_defaults():
    config = load_config_text(BASE, file="c.yaml")
    assert config.server.listen == ("127.0.0.1", 0)
    assert config.upstreams["app"].timeout == timedelta(seconds=30)
    assert config.routes[0].mode == "enforce"
    assert config.oidc is None and config.directory is None  # absent section = feature off


def test_unknown_key_names_line_and_path():
    text = BASE.replace("    upstream: app\n", "    upstream: app\n    permision: x\n")
    assert problems_of(text) == [
        "c.yaml:13: routes[0].permision: unknown key (check the spelling; see config-shape.yaml for the accepted keys)"
    ]


def test_unknown_top_level_key_and_missing_required():
    text = "server:\n  listen: 127.0.0.1:0\n  public_url: http://x\nfoo: 1\n"
    found = problems_of(text)
    assert "c.yaml:4: foo: unknown key" in found[-1] or any("c.yaml:4: foo: unknown key" in p for p in found)
    assert any("routes: required key is missing" in p for p in found)
    assert any("upstreams: required key is missing" in p for p in found)


def test_bad_values_are_explained():
    text = BASE.replace("timeout: 30s", "timeout: soon").replace("listen: 127.0.0.1:0", "listen: 127.0.0.1:99999")
    found = problems_of(text)
    assert any(p.startswith("c.yaml:2: server.listen:") and "port" in p for p in found)
    assert any(p.startswith("c.yaml:8: upstreams.app.timeout:") and "duration" in p for p in found)


@pytest.mark.parametrize("value", ["1e400", "1e96", ".inf", ".nan", "99999999999999999999d"])
def test_a_duration_too_long_to_hold_is_a_config_error(value):
    """Not an OverflowError out of timedelta (a crash of `rolegate check`/serve/reload): a problem naming the key."""
    found = problems_of(BASE.replace("timeout: 30s", f"timeout: {value}"))
    assert any(p.startswith("c.yaml:8: upstreams.app.timeout:") and "duration" in p for p in found), found


def test_cross_references_are_checked():
    text = (
        BASE
        + """\
bindings:
  - {group: office, role: ghost}
  - {group: office, role: office, scope: "building:a"}
"""
    )
    text = text.replace(
        "roles:\n  office: {permissions: [invoices:view]}",
        "roles:\n  office: {permissions: [invoices:edit], inherits: [a]}\n  a: {inherits: [b]}\n  b: {inherits: [a]}",
    )
    found = problems_of(text)
    assert any("roles.office.permissions[0]: unknown permission 'invoices:edit'" in p for p in found)
    assert any("roles inherit in a cycle" in p for p in found)
    assert any("bindings[0].role: unknown role 'ghost'" in p for p in found)
    assert any("bindings[1].scope: unknown scope type 'building'" in p for p in found)


def test_env_and_file_interpolation(tmp_path, monkeypatch):
    secret = tmp_path / "secret"
    secret.write_text("s" * 40 + "\n")
    text = BASE + "session:\n  secret: ${file:" + str(secret) + "}\noidc:\n  issuer: ${ISSUER}\n  client_id: rg\n"
    config = load_config_text(text, file="c.yaml", env={"ISSUER": "https://sso.example.com"})
    assert config.session.secret.get_secret_value() == "s" * 40
    assert config.oidc.issuer == "https://sso.example.com"
    assert "s" * 40 not in repr(config)  # secrets never print
    found = problems_of(text, env={})
    assert found == ["c.yaml:16: oidc.issuer: environment variable ISSUER is not set"]
    found = problems_of(text.replace(str(secret), str(tmp_path / "missing")), env={"ISSUER": "https://x"})
    assert found[0].startswith("c.yaml:14: session.secret: cannot read secret file")


def test_an_explicit_env_leaves_the_process_environment_alone(monkeypatch):
    """``env=`` is read as given; the process environment (other threads read it) is never swapped."""

    class Untouchable(dict):
        def _refuse(self, *args, **kwargs):
            raise AssertionError("load_config_text modified os.environ")

        clear = update = popitem = _refuse  # (pytest itself sets PYTEST_CURRENT_TEST item by item)

    monkeypatch.setattr(os, "environ", Untouchable({**os.environ, "ISSUER": "https://from-process.example.com"}))
    text = BASE + "session:\n  secret: " + "s" * 40 + "\noidc:\n  issuer: ${ISSUER}\n  client_id: rg\n"
    assert (
        load_config_text(text, env={"ISSUER": "https://given.example.com"}).oidc.issuer == "https://given.example.com"
    )
    assert load_config_text(text).oidc.issuer == "https://from-process.example.com"  # no env: the process's
    assert problems_of(text, env={}) == ["c.yaml:16: oidc.issuer: environment variable ISSUER is not set"]


def test_literal_dollar_brace_escape():
    text = BASE.replace("routes:", 'scopes:\n  client: {description: "costs $${x}"}\nroutes:')
    assert load_config_text(text, file="c.yaml").scopes["client"].description == "costs ${x}"


def test_duplicate_keys_and_bad_yaml():
    assert problems_of(BASE + "permissions: [a:b]\n")[0].startswith(
        "c.yaml:13: permissions: duplicate key (first at line 4)"
    )
    assert problems_of("server: [\n")[0].startswith("c.yaml:2: invalid YAML")
    assert problems_of("")[0] == "c.yaml:1: the file is empty"
    assert problems_of("- a\n- b\n")[0].startswith("c.yaml:1: the top level must be a mapping")


def test_missing_file():
    with pytest.raises(ConfigError) as info:
        load_config("/nonexistent/rolegate.yaml")
    assert "no such file" in info.value.problems[0]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_crashes(text):
    try:
        load_config_text(text, file="c.yaml")
    except ConfigError as exc:
        assert exc.problems and all(p.startswith("c.yaml") for p in exc.problems)


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=20,
    )
)
def test_arbitrary_structures_under_known_keys_never_crash(value):
    import yaml

    for key in ("server", "routes", "roles", "bindings", "scopes", "upstreams", "daypass", "audit"):
        doc = yaml.safe_load(BASE)
        doc[key] = value
        try:
            load_config_text(yaml.safe_dump(doc), file="c.yaml")
        except ConfigError as exc:
            assert exc.problems


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rolegate", *args], capture_output=True, text=True, timeout=60)


def test_check_cli_exit_codes(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(BASE)
    result = run_cli("check", "-c", str(good))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.replace("upstream: app", "upstream: nowhere"))
    result = run_cli("check", "-c", str(bad))
    assert result.returncode == 2
    assert f"{bad}:12: routes[0].upstream: unknown upstream 'nowhere'" in result.stderr


def test_a_role_manages_only_declared_things():
    found = problems_of(
        BASE.replace(
            "office: {permissions: [invoices:view]}",
            "office: {permissions: [invoices:view], manages: {assigns: [tasks:perform], "
            "roles: [ghost], settings: [nope]}}",
        )
    )
    assert any("roles.office.manages.assigns[0]" in p and "unknown permission 'tasks:perform'" in p for p in found)
    assert any("roles.office.manages.roles[0]" in p and "unknown role 'ghost'" in p for p in found), found
    assert any("roles.office.manages.settings[0]" in p and "unknown user setting 'nope'" in p for p in found)
    found = problems_of(
        BASE.replace("office: {permissions: [invoices:view]}", "office: {manages: {roles: everything}}")
    )
    assert any("roles.office.manages.roles" in p for p in found), found


SETTINGS = (
    BASE.replace(
        "office: {permissions: [invoices:view]}",
        "office: {permissions: [invoices:view], if_setting: {prices: [pricing:view]}}",
    )
    + """scopes: {building: {}}
user_settings:
  prices: {description: See prices}
"""
)


def test_if_setting_and_users_are_checked():
    config = load_config_text(
        SETTINGS + "users: {ann: {settings: [prices]}, bo: {settings: {'building:a': [prices]}}}\n", file="c.yaml"
    )
    assert config.roles["office"].if_setting == {"prices": ("pricing:view",)}
    assert config.users["ann"].settings == {"*": ("prices",)} and config.users["bo"].settings == {
        "building:a": ("prices",)
    }
    found = problems_of(
        SETTINGS.replace("if_setting: {prices: [pricing:view]}", "if_setting: {prices: [nope:x], ghost: []}")
        + "users: {ann: {settings: {'planet:mars': [prices, other]}}}\n"
    )
    assert any("roles.office.if_setting.prices[0]" in p and "unknown permission 'nope:x'" in p for p in found), found
    assert any("roles.office.if_setting.ghost" in p and "unknown user setting 'ghost'" in p for p in found)
    assert any("users.ann.settings.planet:mars" in p and "unknown scope type 'planet'" in p for p in found)
    assert any("users.ann.settings.planet:mars[1]" in p and "unknown user setting 'other'" in p for p in found)
    found = problems_of(SETTINGS + "users: {ann: {settings: {'building a': [prices]}}}\n")
    assert any("users.ann.settings" in p and "'building a'" in p for p in found), found
    # A setting no role lists under if_setting would grant nothing: say so.
    found = problems_of(SETTINGS.replace("  prices: {description: See prices}", "  prices: {}\n  idle: {}"))
    assert any("user_settings.idle" in p and "no role lists 'idle' under if_setting" in p for p in found), found


OLD_SETTING = (
    BASE
    + """user_settings:
  documents: {description: Documents, permissions: [invoices:view], users: [heidi]}
"""
)


def test_check_refuses_the_old_semantics_and_says_what_changed(tmp_path):
    """A config written for the old model (a user setting with permissions, granted everywhere without any
    role) must not load with a silently different meaning: check fails, naming what changed and the new way."""
    old = tmp_path / "old.yaml"
    old.write_text(OLD_SETTING)
    result = run_cli("check", "-c", str(old))
    assert result.returncode == 2, result.stdout
    assert (
        f"{old}:14: user_settings.documents.permissions: a user setting no longer grants permissions by "
        "itself" in result.stderr
    ), result.stderr
    assert "roles.<role>.if_setting.<setting>" in result.stderr and "users.<name>.settings" in result.stderr
    assert "user_settings.documents.users: who has a setting on moved to the top-level users: section" in result.stderr
    old.write_text(
        BASE.replace(
            "office: {permissions: [invoices:view]}", "office: {permissions: [invoices:view], assigns: [invoices:view]}"
        )
    )
    result = run_cli("check", "-c", str(old))
    assert result.returncode == 2 and "roles.office.assigns: assigns moved under manages" in result.stderr, (
        result.stderr
    )


def test_check_compiles_what_serve_compiles(tmp_path):
    # A config `check` passes must not fail when `serve` builds its upstreams and redactions.
    missing = tmp_path / "missing-ca.pem"
    bad = tmp_path / "tls.yaml"
    bad.write_text(
        BASE.replace(
            'app: {url: "http://127.0.0.1:8081", timeout: 30s}',
            f'app: {{url: "https://app.internal", ca_file: "{missing}"}}',
        )
    )
    result = run_cli("check", "-c", str(bad))
    assert result.returncode == 2
    assert f"{bad}:8: upstreams.app: upstream 'app': ca_file '{missing}' could not be read" in result.stderr
    redact = tmp_path / "redact.yaml"
    redact.write_text(BASE + "    redact: {fields: ['lines[*'], unless: pricing:view}\n")
    result = run_cli("check", "-c", str(redact))
    assert result.returncode == 2 and "redact" in result.stderr, result.stdout + result.stderr


def test_check_reports_ambiguous_routes(tmp_path):
    text = BASE + "  - {path: /invoices/**, permission: invoices:view, upstream: app}\n"
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    result = run_cli("check", "-c", str(path))
    assert result.returncode == 2
    assert str(path) in result.stdout + result.stderr


# reference.yaml is the contract's config shape, which elides part of its permission catalogue:
# tests/config/test_contract_shape.py completes and checks it.
EXAMPLE_CONFIGS = sorted(
    p
    for p in (REPO / "config" / "examples").glob("*.yaml")
    if not p.name.endswith(".tests.yaml") and p.name != "reference.yaml"
)


@pytest.mark.parametrize("example", EXAMPLE_CONFIGS, ids=lambda p: p.name)  # *.tests.yaml: rolegate test's cases
def test_every_example_config_checks(example, tmp_path):
    env = {
        "ROLEGATE_LISTEN": "127.0.0.1:0",
        "ROLEGATE_PUBLIC_URL": "http://127.0.0.1:8080",
        "ROLEGATE_INTERNAL_LISTEN": "127.0.0.1:0",
        "ROLEGATE_OIDC_ISSUER": "http://127.0.0.1:1",
        "ROLEGATE_OIDC_SECRET": "x",
        "LAB_BACKEND_URL": "http://127.0.0.1:2",
        "ROLEGATE_SESSION_SECRET": "x" * 40,
        "LAB_LDAP_URL": "ldap://127.0.0.1:3",
        "LDAP_PASSWORD": "x",
        "ROLEGATE_DATA": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-m", "rolegate", "check", "-c", str(example)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, **env},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_scope_types_nest_a_bounded_depth():
    deep = "".join(f"  t{i}: {{parent: t{i + 1}}}\n" for i in range(15)) + "  t15: {}\n"
    found = problems_of(BASE + "scopes:\n" + deep)
    assert any("scopes.t0.parent" in p and "scope types nest 16 deep" in p and "at most 15" in p for p in found)
    ok = "".join(f"  t{i}: {{parent: t{i + 1}}}\n" for i in range(14)) + "  t14: {}\n"
    assert len(load_config_text(BASE + "scopes:\n" + ok, file="c.yaml").scopes) == 15
